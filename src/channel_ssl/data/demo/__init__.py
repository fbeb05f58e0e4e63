"""Demo generators: small procedural copies of every dataset in its native layout; drawing code in :mod:`.draw`."""
