"""``semmae export --push-to-hub USER/REPO``: an exported folder uploaded to the Hugging Face Hub
(``huggingface_hub``, installed with timm). Downloading (``hf-hub:`` checkpoints) is :mod:`semmae.utils.hub`.

Every failure (no network, no token, no rights) is one :class:`UserError` line naming the cause; the export is kept.
"""

from __future__ import annotations

import os
from pathlib import Path

from semmae.errors import UserError
from semmae.utils.ownership import OWNER_NAME
from semmae.utils.run_lock import LOCK_NAME


def push_folder(folder: str | Path, repo: str, private: bool = False) -> str:
    """Create ``repo`` (a model repo, kept if it exists) and upload ``folder`` to it; returns the repo URL.

    The endpoint is read at call time (``HF_ENDPOINT``, default https://huggingface.co), the token from
    ``HF_TOKEN`` or ``hf auth login``.
    """
    try:
        from huggingface_hub import HfApi
    except ImportError:
        raise UserError("--push-to-hub needs huggingface_hub: pip install huggingface_hub") from None
    endpoint = os.environ.get("HF_ENDPOINT") or "https://huggingface.co"
    api = HfApi(endpoint=endpoint)
    try:
        url = api.create_repo(repo, repo_type="model", private=private, exist_ok=True)
        api.upload_folder(
            repo_id=repo,
            folder_path=str(folder),
            repo_type="model",
            commit_message="semmae export",
            ignore_patterns=[OWNER_NAME, LOCK_NAME],  # the folder's bookkeeping stays on this machine
        )
    except Exception as e:  # noqa: BLE001 - network, auth and server errors all end the command in one line
        cause = " ".join(str(e).split())[:300] or type(e).__name__
        raise UserError(
            f"--push-to-hub {repo}: upload to {endpoint} failed ({type(e).__name__}: {cause}); the export is "
            f"kept at {folder} - check the network, HF_ENDPOINT and the token (HF_TOKEN or `hf auth login`)"
        ) from None
    return str(url)
