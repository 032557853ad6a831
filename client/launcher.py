"""The hospital's ``flwr-clientapp``: refuse an unapproved app before any of its code is installed.

Flower 1.42's SuperNode runs every message of a run in a fresh ``flwr-clientapp`` process,
started by name from ``PATH`` (``flwr.supercore.superexec.executor.subprocess_executor``). That
process pulls the message, context, run and app bundle (FAB) from the SuperNode, and only then
installs and imports the FAB (``flwr.supernode.runtime.run_clientapp``). ``client.daemon``
puts a ``flwr-clientapp`` of its own first on the SuperNode's ``PATH``; it runs this module,
which is Flower's ``flwr-clientapp`` with one step added right after the pull: the FAB is
checked against the hospital's policy and approvals (``client.approval``). A refused app gets
an error reply naming the reason, an audit line (``outcome: refused``), and its code is never
installed or imported. Flower's install step is wrapped too (:func:`verified_install`): the
app directory it imports from must hold exactly the checked bundle.

Flower's ``--trusted-entities`` (signed FABs) was not used: in 1.42 it depends on a platform
licence check that an offline SuperLink does not have.
"""

from __future__ import annotations

import logging
import shutil
import sys
from pathlib import Path

from flwr.app import Message
from flwr.app.error import Error
from flwr.common.constant import ErrorCode
from flwr.supernode.cli.flwr_clientapp import flwr_clientapp
from flwr.supernode.runtime import run_clientapp as runtime

from client.approval import app_dir_mismatch, app_refusal, fab_sha256
from client.audit import STATE_DIR_KEY, record_refusal
from client.identity import own_name
from client.policy import NODE_POLICY, Policy
from common.sender_name import with_sender

log = logging.getLogger(__name__)


class UnapprovedAppError(RuntimeError):
    """The run's app is not one this hospital approved; nothing of it was installed."""


class UnverifiedInstallError(RuntimeError):
    """The installed app directory is not the checked bundle even after a fresh install."""


_pull_task_input = runtime.pull_task_input
_install_from_fab = runtime.install_from_fab


def checked_pull_task_input(client):
    """Flower's pull, then the approval check; a refusal is answered and audited here."""
    message, context, run, fab = _pull_task_input(client)
    node_config = dict(context.node_config)
    if NODE_POLICY in node_config:
        state_dir = Path(str(node_config[STATE_DIR_KEY]))
        reason = app_refusal(fab.content, Policy.load(str(node_config[NODE_POLICY])), state_dir)
        if reason is not None:
            reason = with_sender(own_name(node_config), reason)
            record_refusal(message, context, reason)
            error = Error(code=ErrorCode.LOAD_CLIENT_APP_EXCEPTION, reason=reason)
            runtime.push_message(client, Message(error, reply_to=message), context)
            raise UnapprovedAppError(reason)
    return message, context, run, fab


def verified_install(content: bytes, skip_prompt: bool = True) -> Path:
    """Flower's install, then proof that its app directory holds exactly this bundle.

    Flower reuses a directory named by 8 hex digits of the FAB's hash (a collision takes under a
    second to find), so a directory that differs is removed and the bundle installed afresh.
    """
    app_dir = _install_from_fab(content, skip_prompt=skip_prompt)
    mismatch = app_dir_mismatch(content, app_dir)
    if mismatch is None:
        return app_dir
    log.warning("reinstalling app sha256 %s: %s", fab_sha256(content), mismatch)
    shutil.rmtree(app_dir)
    app_dir = _install_from_fab(content, skip_prompt=skip_prompt)
    mismatch = app_dir_mismatch(content, app_dir)
    if mismatch is not None:
        raise UnverifiedInstallError(f"app sha256 {fab_sha256(content)} not run: {mismatch}")
    return app_dir


def main() -> None:
    sys.dont_write_bytecode = True  # no __pycache__ in the app directory, which must match the FAB
    runtime.pull_task_input = checked_pull_task_input
    runtime.install_from_fab = verified_install
    sys.argv[0] = "flwr-clientapp"
    flwr_clientapp()


if __name__ == "__main__":
    main()
