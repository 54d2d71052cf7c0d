"""Human review: people judge models' outputs (blind pairwise, rubric scores, model vs human reference)
and dataset rows, and their judgements become statistics and training data.

`records` (the shapes handed out, no I/O), `rubric` (the rubric spec), `stats` (win rates, Bradley-Terry,
agreement: pure numpy), `results` (judgements -> statistics), `sources` (items from an evaluation,
served requests or a prepared dataset), `store` (the queue over the registry: create, next item, record,
progress, results) and `export` (judgements -> versioned DPO, KTO and SFT datasets, and a data review's
next dataset version). The web pages and CLI are composition roots above these.

How a page uses it: `ServingStore.authenticate(key)` gives the `Caller` (with `name` and `role`);
`ReviewStore.list_tasks(caller)`; `next_item(task_id, caller)` gives an `ItemView` (outputs in this
reviewer's order, no identities; None when done); `record(task_id, item_id, caller, choice=..., scores=...,
edited_text=..., comment=..., seconds=...)` gives the `Judgement` with the identities revealed;
`progress(...)`, `results(...)` (each `.to_dict()` is the JSON). Admins: `sources.collect_items(...)` then
`ReviewStore.create(...)`, and `export.export_review(...)`. Errors: `NotFoundError` (a 404: missing or
another tenant's), `ForbiddenError` (a 403: the role may not), other `ConfigError`s (a 400/422 whose
message names the problem)."""
