"""The `hub` export: an exported folder pushed to a Hugging Face Hub model repository.

Owns: the `huggingface_hub` calls (create the repository if needed, upload the folder as one commit).
Does not own: what is uploaded (a `merged` export, made and checked first by `core`), or credentials
(the token comes from the caller, else huggingface_hub's own `HF_TOKEN` / login lookup).
"""

from __future__ import annotations

from pathlib import Path

from huggingface_hub import HfApi


def push_to_hub(
    folder: Path, repo_id: str, *, token: str | None, private: bool, endpoint: str | None = None
) -> str:
    """Upload `folder` to the model repository `repo_id` (created if missing); returns the commit URL."""
    api = HfApi(endpoint=endpoint, token=token)
    api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
    commit = api.upload_folder(
        folder_path=str(folder), repo_id=repo_id, repo_type="model", commit_message="tunesmith export"
    )
    return str(commit.commit_url)
