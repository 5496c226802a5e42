"""Wire formats as pure data: no I/O, imports nothing else of the project."""
