"""Responsible-AI tooling: the tamper-evident audit trail (bias audits and guardrails are not built yet)."""
