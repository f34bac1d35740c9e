"""Actions an experiment can take, one idea per file, each registered by name in
`chaos.engine.registry.ACTIONS`. An action parses its words when the file is checked (so a bad
one fails before any process starts) and runs against a `Trial`."""
