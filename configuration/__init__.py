"""Reading operators' YAML files: node positions kept, YAML traps caught, pydantic
validation, and one error listing FILE:LINE: path: message (fix: ...).

Used for station files, analyzer profiles, QC thresholds and the station registry.
"""
