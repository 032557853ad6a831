"""The hospital's ``flwr-clientapp``: refuse an unapproved app before any of its code is installed.

Flower 1.42's SuperNode runs every message of a run in a fresh ``flwr-clientapp`` process,
started by name from ``PATH`` (``flwr.supercore.superexec.executor.subprocess_executor``). That
process pulls the message, context, run and app bundle (FAB) from the SuperNode, and only then
installs and imports the FAB (``flwr.supernode.runtime.run_clientapp``). ``client.daemon``
puts a ``flwr-clientapp`` of its own first on the SuperNode's ``PATH``; it runs this module,
which is Flower's ``flwr-clientapp`` with one step added right after the pull: the FAB is
checked against the hospital's policy and approvals (``client.approval``). A refused app gets
an error reply naming the reason, an audit line (``outcome: refused``), and its code is never
installed or imported.

Flower's ``--trusted-entities`` (signed FABs) was not used: in 1.42 it depends on a platform
licence check that an offline SuperLink does not have.
"""

from __future__ import annotations

import sys
from pathlib import Path

from flwr.app import Message
from flwr.app.error import Error
from flwr.common.constant import ErrorCode
from flwr.supernode.cli.flwr_clientapp import flwr_clientapp
from flwr.supernode.runtime import run_clientapp as runtime

from client.approval import app_refusal
from client.audit import STATE_DIR_KEY, record_refusal
from client.policy import NODE_POLICY, Policy


class UnapprovedAppError(RuntimeError):
    """The run's app is not one this hospital approved; nothing of it was installed."""


_pull_task_input = runtime.pull_task_input


def checked_pull_task_input(client):
    """Flower's pull, then the approval check; a refusal is answered and audited here."""
    message, context, run, fab = _pull_task_input(client)
    node_config = dict(context.node_config)
    if NODE_POLICY in node_config:
        state_dir = Path(str(node_config[STATE_DIR_KEY]))
        reason = app_refusal(fab.content, Policy.load(str(node_config[NODE_POLICY])), state_dir)
        if reason is not None:
            record_refusal(message, context, reason)
            error = Error(code=ErrorCode.LOAD_CLIENT_APP_EXCEPTION, reason=reason)
            runtime.push_message(client, Message(error, reply_to=message), context)
            raise UnapprovedAppError(reason)
    return message, context, run, fab


def main() -> None:
    runtime.pull_task_input = checked_pull_task_input
    sys.argv[0] = "flwr-clientapp"
    flwr_clientapp()


if __name__ == "__main__":
    main()
