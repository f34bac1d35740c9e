"""Observers: what watches a trial while it runs, one file each, registered by name in
`chaos.engine.registry.OBSERVERS`. A measure that needs one names it (`needs=("channelz",)`); the
trial makes it with `observer(trial)`, calls `await start()` before the herd starts,
`on_release()` when the herd's barrier opens, `await finish()` once the herd has ended (its value
becomes `Observations.series[name]`) and `await close()` whatever happened."""
