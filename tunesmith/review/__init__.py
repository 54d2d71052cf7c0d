"""Human review: people judge models' outputs (blind pairwise, rubric scores, model vs human reference)
and dataset rows, and their judgements become statistics and training data.

`records` (the shapes handed out, no I/O), `rubric` (the rubric spec), `stats` (win rates, Bradley-Terry,
agreement: pure numpy), `results` (judgements -> statistics), `sources` (items from an evaluation,
served requests or a prepared dataset), `store` (the queue over the registry: create, next item, record,
progress, results) and `export` (judgements -> versioned DPO, KTO and SFT datasets, and a data review's
next dataset version). The web pages and CLI are composition roots above these."""
