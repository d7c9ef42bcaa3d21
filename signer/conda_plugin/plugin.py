"""conda's entry point (`[project.entry-points.conda]`): hooks only, imported at start-up.

conda imports every plugin module on every run, so this module imports conda's plugin
API and nothing of cf-sign's checks; the hook loads them when a transaction is solved.
The hook is registered `tryfirst`, so it runs before conda-content-trust's: a refusal
stops the transaction before that plugin parses the repodata again.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

import conda.plugins
from conda.plugins.types import CondaPostSolve, CondaPreTransactionAction, CondaSetting

if TYPE_CHECKING:
    from conda.models.records import PackageRecord

SETTING = "cf_sign_channels"  # signer.conda_plugin.config.SETTING, without importing it


def _post_solve(
    repodata_fn: str,
    unlink_precs: tuple[PackageRecord, ...],
    link_precs: tuple[PackageRecord, ...],
) -> None:
    _enforce(repodata_fn, link_precs, explicit=False)


def _enforce(repodata_fn: str, link_precs: Iterable[PackageRecord], *, explicit: bool) -> None:
    from conda import CondaError
    from conda.base.context import context

    if not getattr(context.plugins, SETTING, None):
        return  # nothing configured: cf-sign stays out of the way entirely
    try:
        from signer.conda_plugin.hook import enforce_transaction

        enforce_transaction(repodata_fn, link_precs, explicit=explicit)
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
def conda_pre_transaction_actions() -> Iterator[CondaPreTransactionAction]:
    """Records that skipped the solver (explicit installs): checked before linking.

    conda builds pre-transaction actions after the download and extraction and before
    anything is linked; records the post-solve hook checked in this process are skipped.
    """
    from conda.core.path_actions import Action

    class ExplicitRecordsCheck(Action):  # type: ignore[misc]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            _enforce("repodata.json", tuple(self.link_precs or ()), explicit=True)

        def verify(self) -> None:
            self._verified = True

        def execute(self) -> None:
            pass

        def reverse(self) -> None:
            pass

        def cleanup(self) -> None:
            pass

    yield CondaPreTransactionAction(name="cf-sign-explicit-records", action=ExplicitRecordsCheck)


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
