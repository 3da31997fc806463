"""
SIGHUP re-reads the devices file (or the [devices.N] tables of the --config
file), as daemons do with their configuration.

Without a handler SIGHUP ends the process; with this one the server keeps
running and decodes with the new profiles from the next packet on.  A file
that does not load leaves the old profiles in place, and the log says why.

SIGHUP then takes up the packets C{weather replay} asked the server to
decode again (it marks them in the journal and sends the signal): a replay
after describing a device is decoded with the new profiles.
"""

from __future__ import annotations

import signal
from collections.abc import Callable, Mapping
from typing import Any

from twisted.application.service import Service
from twisted.logger import Logger

from weather.app.options import ConfigurationError
from weather.app.settings import load_devices
from weather.core.devices import DeviceProfile, DevicesError
from weather.core.dump import counted


class DevicesReloader:
    """Load C{path} again (with C{load}) and hand the profiles to C{apply}."""

    log = Logger()

    def __init__(
        self,
        path: str | None,
        apply: Callable[[Mapping[int, DeviceProfile]], object],
        current: Mapping[int, DeviceProfile],
        load: Callable[[str], Mapping[int, DeviceProfile]] = load_devices,
    ) -> None:
        self.path = path
        self.load = load
        self.apply = apply
        self.current = current
        self.reloads = 0
        self.failures = 0

    def reload(self) -> bool:
        """Re-read the devices file; False (and the old profiles kept) if it is bad."""
        if self.path is None:
            self.log.info(
                "SIGHUP: no --devices file to re-read (the built-in reference "
                "station is used)"
            )
            return False
        try:
            profiles = self.load(self.path)
        except (DevicesError, ConfigurationError) as e:
            self.failures += 1
            self.log.error(
                "SIGHUP: {why}; still using the {profiles} loaded before",
                why=str(e),
                count=len(self.current),
                profiles=counted(len(self.current), "profile"),
            )
            return False
        added = sorted(set(profiles) - set(self.current))
        removed = sorted(set(self.current) - set(profiles))
        changed = sorted(
            device
            for device in set(profiles) & set(self.current)
            if profiles[device] != self.current[device]
        )
        self.apply(profiles)
        self.current = profiles
        self.reloads += 1
        self.log.info(
            "SIGHUP: re-read {path}: {profiles} (added {added}, "
            "removed {removed}, changed {changed}); packets in quarantine for "
            "devices that were unknown can now be stored with 'weather replay', "
            "which hands them to this server",
            path=self.path,
            count=len(profiles),
            profiles=counted(len(profiles), "station profile"),
            added=_ids(added),
            removed=_ids(removed),
            changed=_ids(changed),
        )
        return True


def _ids(devices: list[int]) -> str:
    return ", ".join(map(str, devices)) or "none"


class HangupService(Service):
    """
    While running, SIGHUP calls C{actions} in the reactor thread, in order,
    once for the signals that arrive before they run (a burst reloads once,
    not once per signal).  Once stopped, SIGHUP is ignored rather than handed back to
    the default action, which would end the process in the middle of its
    stop (a flush, the journal's last commit); L{restore} puts the previous
    handler back.
    """

    log = Logger()

    def __init__(
        self,
        reactor: Any,
        *actions: Callable[[], object],
        handled: Callable[[], object] | None = None,
    ) -> None:
        """
        @param handled: called once SIGHUP is handled and the service runs
            (the server then says where to send it: L{Journal.publish_pid}).
        """
        self.reactor = reactor
        self.actions = actions
        self.handled = handled
        self._previous: Any = None
        self._installed = False
        self._pending = False

    def install(self) -> None:
        """
        Handle SIGHUP from now on, before the service runs (twistd starts the
        services, opening the journal, before its reactor runs): a SIGHUP
        then is handled once the reactor runs, rather than ending the process.
        """
        if not self._installed:
            self._previous = signal.signal(signal.SIGHUP, self.hangup)
            self._installed = True

    def startService(self) -> None:
        super().startService()
        self.install()
        if self.handled is not None:
            self.handled()

    def restore(self) -> None:
        """Give SIGHUP back to the handler it had before."""
        if self._installed:
            signal.signal(signal.SIGHUP, self._previous)
            self._installed = False

    def hangup(self, signum: int, frame: object) -> None:
        """The signal handler: run the action soon, in the reactor thread."""
        if not self._pending:
            self._pending = True
            self.reactor.callFromThread(self._hungup)

    def _hungup(self) -> None:
        self._pending = False
        if self.running:
            for action in self.actions:
                action()
        else:
            self.log.info("SIGHUP while stopping: ignored")
