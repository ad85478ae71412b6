"""The domain's words, defined once: station ids and kinds, the regulation's status
codes and parameter symbols, QARTOD flags, and the Modbus data model.

Standard library only, so every other package may import it.
"""
