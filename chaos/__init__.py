"""The lab's controller, in layers that import only downwards:

- `cli/`: the `chaos` command: the click group and one thin module per command group;
- `scenarios/`: the shipped scenarios (what is special about each: fields, derived rows, plots);
- `report/`: result documents as tables, plots, markdown and HTML;
- `engine/`: experiments as data, the runner, trials, actions, measures, observers, the herd;
- `lab/`: running the stack: processes and their state file, backends (local, Docker), Redis,
  Prometheus, the admin planes, the journal;
- `wire/`: the wire-fault proxy, a process of its own that knows nothing of the layers above.
"""
