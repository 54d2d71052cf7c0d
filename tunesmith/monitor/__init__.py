"""Watching deployments: A/B statistics (`sequential`, pure), drift and output signals (`drift`,
`signals`, pure; `embed` for hidden-state vectors), and the reports the commands print (`ab`, `check`),
which read the registry through `tunesmith.registry.monitor_store`."""
