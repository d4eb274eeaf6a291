"""The Prefect Secret block as a source of credentials: `${prefect-secret:NAME}` in a config location
(configs/secrets.py holds the rest: references, resolution from the environment, redaction)."""

from __future__ import annotations

from configs.secrets import RESOLVERS, SecretError


def prefect_secret(block: str, key: str) -> str:
    """The value of the Prefect Secret block `block` on the server in PREFECT_API_URL."""
    try:
        from prefect.blocks.system import Secret

        return str(Secret.load(block).get())
    except Exception as exc:  # a missing block, no server: say which reference, never a value
        raise SecretError(
            f"{key} refers to the Prefect Secret block '{block}', which could not be read ({type(exc).__name__}): "
            f"create it (prefect block create secret) on the server in PREFECT_API_URL, or fix {key}"
        ) from None


RESOLVERS["prefect-secret"] = prefect_secret
