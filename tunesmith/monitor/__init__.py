"""Watching deployments: A/B statistics (`sequential`, pure), drift, output and language signals
(`drift`, `signals`, `language`, pure; `embed` for hidden-state vectors), the sampled judge score
(`quality`), and the reports the commands print (`ab`, `check`), which read the registry through
`tunesmith.registry.monitor_store`."""
