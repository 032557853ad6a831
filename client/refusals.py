"""The hospital's refusals: the exceptions whose text is sent to the coordinator unchanged.

``client.error_boundary`` lets only these (and its own request-built ``RequestError``) leave a
hospital, so each refusal states its reason in words fit for the coordinator. Where each kind
of request is refused:

* ``client.keyholder``: protocol rules (set-up, dealings, encryption rounds, decryption sets),
  and, through ``client.ledger``, a release its release ledger already holds for another
  contributor set, or any request once the ledger was altered;
* ``client.policy``: a request the hospital's policy keys forbid (``PolicyRefusal``);
* ``client.privacy_budget``: a DP run or round its differential-privacy budget does not allow;
* ``client.app``: a config value or blob name that is not the number the protocol expects, and a
  request of a run whose keys this hospital no longer holds (``KeysLost``);
* ``client.error_boundary``: a roster or identity it did not pin (``HospitalIdentityRefusal``,
  kept there as it is also a ``RequestError``), and every other malformed request;
* ``client.approval`` and ``client.launcher``: an app that is not approved (before any
  ClientApp runs, so outside these types).
"""

from __future__ import annotations


class RefusedRequest(RuntimeError):
    """The hospital refuses a request that would reveal more than the round's aggregate."""


class PolicyRefusal(RefusedRequest):
    """A request this hospital's policy forbids; logged as ``refused`` in the audit log."""


class KeysLost(RefusedRequest):
    """This hospital holds no key set-up for the run: its node restarted after the set-up (the
    run's keys live only in the SuperNode's memory), so it can neither encrypt nor decrypt for
    this run. Its text starts with ``common.protocol.KEYS_LOST``, which the server reads."""
