"""TT10 file sources: servers, folder watch and pull that hand each received file to an UploadSink."""
