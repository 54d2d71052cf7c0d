"""Counterfactual rewrites (CheckList-style invariance): a prompt with one group's terms swapped for another's.

Owns: the attribute term lists (the shipped `bias_terms.yaml`, plus a user file of the same shape, with
errors that name its line), finding which groups a text mentions, and the swap itself: whole words
only, names matched only capitalised (so "mark the order" keeps its verb), the case it found kept
(She -> He, MARY -> JOHN), possessives kept (Mary's -> John's), and both directions of a pair swapped in
one pass, so "he told her" becomes "she told him" and never "she told she". English pronouns are
ambiguous ("her" is "his" or "him"); a term listed twice in a group is rewritten to its first partner
before a content word and to its last elsewhere. Each attribute is swapped alone: with names swapped,
"Mary said she" becomes "John said she" (the pronoun is its own attribute). Does not own: running
models on the rewrites or the statistics (see `bias`, `bias_stats`). No torch.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from tunesmith.audit.measures import word_list
from tunesmith.config import ConfigError
from tunesmith.data.records import Example, Message

_NEXT_WORD = re.compile(r"\s+([A-Za-z][\w'-]*)")


@dataclass(frozen=True)
class Attribute:
    """A protected attribute: its groups, each a tuple of terms aligned by position with the others'."""

    name: str
    description: str
    groups: dict[str, tuple[str, ...]]


@dataclass(frozen=True)
class Rewrite:
    """One counterfactual: the example with `source` group's terms and `target`'s swapped."""

    attribute: str
    source: str  # a group the original mentions
    target: str  # the group it is rewritten to
    example: Example


def load_attributes(extra: Path | None = None) -> dict[str, Attribute]:
    """The shipped attributes, with those of `extra` added (an attribute of the same name is replaced)."""
    shipped = resources.files("tunesmith.audit").joinpath("bias_terms.yaml").read_text(encoding="utf-8")
    attributes = parse_attributes(shipped, "bias_terms.yaml")
    if extra is not None:
        try:
            text = extra.read_text(encoding="utf-8")
        except OSError as error:
            raise ConfigError(f"{extra}: cannot read the term lists: {error}") from error
        attributes |= parse_attributes(text, str(extra))
    return attributes


def choose_attributes(extra: Path | None, names: Sequence[str] | None) -> dict[str, Attribute]:
    """The attributes named (all of them when `names` is None), from the shipped lists and `extra`."""
    attributes = load_attributes(extra)
    unknown = sorted(set(names or []) - set(attributes))
    if unknown:
        raise ConfigError(f"bias_audit.attributes: {unknown} unknown; choose from {', '.join(attributes)}")
    return {name: attributes[name] for name in names or attributes}


def parse_attributes(text: str, source: str) -> dict[str, Attribute]:
    """Attributes from YAML text; an error names `source` and the line of the attribute at fault."""
    try:
        node = yaml.compose(text)
        raw = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise ConfigError(f"{source}: not valid YAML: {error}") from error
    if not isinstance(raw, dict) or node is None:
        raise ConfigError(f"{source}: expected a mapping of attribute names to {{description, groups}}")
    lines = {key.value: key.start_mark.line + 1 for key, _ in node.value if hasattr(key, "value")}
    return {
        str(name): _attribute(str(name), body, f"{source}:{lines.get(name, 1)}") for name, body in raw.items()
    }


def _attribute(name: str, body: Any, where: str) -> Attribute:
    if not isinstance(body, dict) or not isinstance(body.get("groups"), dict):
        raise ConfigError(f"{where}: attribute '{name}' needs `groups:`, a mapping of group name to terms")
    unknown = set(body) - {"description", "groups"}
    if unknown:
        raise ConfigError(
            f"{where}: attribute '{name}': unknown keys {sorted(unknown)} (description, groups)"
        )
    groups: dict[str, tuple[str, ...]] = {}
    for group, terms in body["groups"].items():
        if (
            not isinstance(terms, list)
            or not terms
            or not all(isinstance(t, str) and t.strip() for t in terms)
        ):
            raise ConfigError(f"{where}: attribute '{name}', group '{group}': expected a list of words")
        groups[str(group)] = tuple(term.strip() for term in terms)
    if len(groups) < 2:
        raise ConfigError(f"{where}: attribute '{name}' needs at least two groups to swap between")
    sizes = {group: len(terms) for group, terms in groups.items()}
    if len(set(sizes.values())) > 1:
        raise ConfigError(
            f"{where}: attribute '{name}': groups list {sizes} terms; terms are swapped by position, so "
            "every group must list as many"
        )
    return Attribute(name, str(body.get("description", "")), groups)


def mentioned_groups(attribute: Attribute, text: str) -> list[str]:
    """The groups of `attribute` that `text` mentions, in the attribute's order."""
    return [group for group, terms in attribute.groups.items() if find_terms(terms, text)]


def find_terms(terms: Sequence[str], text: str) -> list[re.Match[str]]:
    """Every whole-word occurrence of `terms` in `text` (capitalised terms only as written or in capitals)."""
    canonical = {term.lower(): term for term in terms}
    return [
        m
        for m in _pattern(tuple(canonical)).finditer(text)
        if _case_matches(canonical[m.group(0).lower()], m.group(0))
    ]


def swap_text(attribute: Attribute, first: str, second: str, text: str) -> str:
    """`text` with `first`'s terms and `second`'s exchanged, both directions in one pass."""
    partners: dict[str, list[str]] = {}
    canonical: dict[str, str] = {}
    for one, other in ((first, second), (second, first)):
        for term, partner in zip(attribute.groups[one], attribute.groups[other], strict=True):
            options = partners.setdefault(term.lower(), [])
            if partner not in options:
                options.append(partner)
            canonical[term.lower()] = term

    def substitute(match: re.Match[str]) -> str:
        found = match.group(0)
        if not _case_matches(canonical[found.lower()], found):
            return found
        options = partners[found.lower()]
        partner = options[0] if len(options) == 1 or _before_content_word(text, match.end()) else options[-1]
        return _with_case(partner, found)

    return _pattern(tuple(canonical)).sub(substitute, text)


def rewrite_example(example: Example, attribute: Attribute) -> Iterator[Rewrite]:
    """Each counterfactual of `example` for `attribute`: every group it mentions to every other group.

    A pair is rewritten once: a text that mentions both `female` and `male` gives one rewrite, not two.
    The final assistant turn (the reference) is rewritten too, so a task metric compares like with like.
    """
    text = "\n".join(message["content"] for message in example.messages)
    present = mentioned_groups(attribute, text)
    for source in present:
        for target in attribute.groups:
            if target == source or (target in present and target < source):
                continue
            messages: list[Message] = [
                {"role": m["role"], "content": swap_text(attribute, source, target, m["content"])}
                for m in example.messages
            ]
            yield Rewrite(attribute.name, source, target, replace(example, messages=messages))


def _pattern(terms: tuple[str, ...]) -> re.Pattern[str]:
    alternatives = "|".join(re.escape(term) for term in sorted(terms, key=len, reverse=True))
    return re.compile(rf"(?<!\w)(?:{alternatives})(?!\w)", re.IGNORECASE)


def _case_matches(term: str, found: str) -> bool:
    """A lower-case term matches in any case; a capitalised one (a name) as written or in capitals."""
    return term.islower() or found == term or (found.isupper() and len(found) > 1)


def _with_case(partner: str, found: str) -> str:
    if found.isupper() and len(found) > 1:
        return partner.upper()
    if found[0].isupper():
        return partner[0].upper() + partner[1:]
    return partner


def _before_content_word(text: str, end: int) -> bool:
    """Whether a content word follows position `end` directly (her book), not punctuation or a function word."""
    following = _NEXT_WORD.match(text, end)
    return following is not None and following.group(1).lower() not in word_list("function_words")
