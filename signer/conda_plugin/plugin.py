"""conda's entry point (`[project.entry-points.conda]`): hooks only, imported at start-up.

conda imports every plugin module on every run, so this module imports conda's plugin
API and nothing of cf-sign's checks; the hook loads them when a transaction is solved.
The hook is registered `tryfirst`, so it runs before conda-content-trust's: a refusal
stops the transaction before that plugin parses the repodata again.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import conda.plugins
from conda.plugins.types import CondaPostSolve, CondaSetting

if TYPE_CHECKING:
    from conda.models.records import PackageRecord

SETTING = "cf_sign_channels"  # signer.conda_plugin.config.SETTING, without importing it


def _post_solve(
    repodata_fn: str,
    unlink_precs: tuple[PackageRecord, ...],
    link_precs: tuple[PackageRecord, ...],
) -> None:
    from conda import CondaError
    from conda.base.context import context

    if not getattr(context.plugins, SETTING, None):
        return  # nothing configured: cf-sign stays out of the way entirely
    try:
        from signer.conda_plugin.hook import enforce_transaction

        enforce_transaction(repodata_fn, link_precs)
    except CondaError:
        raise
    except Exception as exc:  # fail closed: a trusted channel is configured
        raise CondaError(
            f"cf-sign could not check the transaction, refusing it: {type(exc).__name__}: {exc}"
        ) from exc


@conda.plugins.hookimpl(tryfirst=True)  # type: ignore[untyped-decorator]
def conda_post_solves() -> Iterator[CondaPostSolve]:
    yield CondaPostSolve(name="cf-sign-channel-trust", action=_post_solve)


@conda.plugins.hookimpl  # type: ignore[untyped-decorator]
def conda_settings() -> Iterator[CondaSetting]:
    from conda.common.configuration import MapParameter, PrimitiveParameter

    yield CondaSetting(
        name=SETTING,
        description=(
            "cf-sign: channels whose records must verify before install, each "
            "{trust: URL or directory, root: anchor root file, policy: enforce|observe}"
        ),
        parameter=MapParameter(MapParameter(PrimitiveParameter("", element_type=str))),
    )
