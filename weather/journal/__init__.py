"""The journal: the SQLite file (L{weather.journal.store}) and the group-commit
service that keeps it off the reactor thread (L{weather.journal.service})."""
