"""How often the training data mentions each group: the representativeness part of a bias audit. No torch.

Owns: per attribute and group, the training examples that mention the group's terms (count and share),
its terms' occurrences (the most frequent listed), a few snippets with their file and line, and for
classification data the labels those examples carry, which is where a learned association shows first
(every example naming a woman labelled `approve`). Does not own: the term lists or matching (see
`counterfactual`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

from tunesmith.audit.counterfactual import Attribute, find_terms
from tunesmith.data.records import Example

SNIPPETS = 3  # examples shown per group
_CONTEXT = 40  # characters either side of the term in a snippet


def representation_report(examples: Sequence[Example], attributes: dict[str, Attribute]) -> dict[str, Any]:
    """Per attribute, per group: examples mentioning it, term counts, snippets, labels (classification)."""
    texts = ["\n".join(message["content"] for message in example.prompt_messages()) for example in examples]
    report: dict[str, Any] = {"examples": len(examples), "attributes": {}}
    for name, attribute in attributes.items():
        groups = {}
        for group, terms in attribute.groups.items():
            groups[group] = _group_counts(examples, texts, terms)
        mentioned = [entry["examples"] for entry in groups.values()]
        report["attributes"][name] = {
            "groups": groups,
            # the most mentioned group per mention of the least (None when some group is never mentioned)
            "imbalance": max(mentioned) / min(mentioned) if min(mentioned) else None,
        }
    return report


def _group_counts(examples: Sequence[Example], texts: Sequence[str], terms: Sequence[str]) -> dict[str, Any]:
    occurrences: Counter[str] = Counter()
    labels: Counter[str] = Counter()
    snippets: list[dict[str, str]] = []
    count = 0
    for example, text in zip(examples, texts, strict=True):
        matches = find_terms(terms, text)
        if not matches:
            continue
        count += 1
        occurrences.update(match.group(0) for match in matches)
        if example.label is not None:
            labels[example.label] += 1
        if len(snippets) < SNIPPETS:
            start, end = matches[0].span()
            snippet = text[max(0, start - _CONTEXT) : end + _CONTEXT].replace("\n", " ")
            snippets.append({"source": example.source, "term": matches[0].group(0), "text": snippet})
    return {
        "examples": count,
        "share": count / len(examples) if examples else 0.0,
        "occurrences": sum(occurrences.values()),
        "top_terms": dict(occurrences.most_common(5)),
        "labels": dict(labels.most_common()),
        "snippets": snippets,
    }
