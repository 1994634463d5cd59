"""Real public medical image sets: converters into the manifest format, a decode pass, and runs on them.

The fetched images live outside the repository (``--src``/``--out``); nothing here ships an image. See
``docs/real-data.md`` for each set's source, licence, counts and known problems.
"""
