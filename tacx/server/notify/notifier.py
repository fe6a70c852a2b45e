"""The notifier: per rule, a quick filter on the bus that turns the events it wants into
notices, and an async consumer with its own queue of them (the bus's QueuedConsumer), so a
hanging webhook delays only its own rule and never the engine. A rule's events within its
burst window of the first become one message; when the coordinator stops, what is gathered
goes out at once, within the bus's drain bound."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from tacx.engine.events import EngineEvent, EventBus, QueuedConsumer
from tacx.home import Home
from tacx.server.notify.command import CommandChannel
from tacx.server.notify.facts import TaskFacts
from tacx.server.notify.message import Message, Notice, message, notice_from
from tacx.server.notify.rules import NotifyRule
from tacx.server.notify.terminal import TerminalChannel
from tacx.server.notify.waiting import waiting_reason
from tacx.server.notify.webhook import WebhookChannel

log = logging.getLogger(__name__)

TICK = "notify.tick"  # handed to a rule's own queue: its burst window may have ended
NOTICE = "notify.notice"  # handed to a rule's own queue: an event it wants, as a notice (data["notice"])
KEPT = 100  # notices a message carries in full; the rest of a burst is counted
SEEN_LIMIT = 10_000  # stages remembered as already announced waiting


class Channel(Protocol):
    async def deliver(self, msg: Message) -> bool: ...

    async def close(self) -> None: ...


@dataclass
class Burst:
    deadline: float
    notices: list[Notice] = field(default_factory=list)
    tally: dict[str, int] = field(default_factory=dict)

    def add(self, notice: Notice) -> None:
        """Keeps the first KEPT in full, but what needs a look (a failure, a budget stop, an
        agent waiting) takes the place of a success: 500 successes and then one failure
        are a message that names the failure."""
        self.tally[notice.event] = self.tally.get(notice.event, 0) + 1
        if len(self.notices) < KEPT:
            self.notices.append(notice)
        elif notice.event != "succeeded":
            success = next((i for i in range(len(self.notices) - 1, -1, -1) if self.notices[i].event == "succeeded"), None)
            if success is not None:
                del self.notices[success]
                self.notices.append(notice)


class RuleSender:
    """Hears one rule's kinds, gathers a burst, and delivers it through the rule's channel."""

    def __init__(self, rule: NotifyRule, channel: Channel, facts: TaskFacts,
                 report: Callable[[str], None] = log.warning) -> None:
        self.rule = rule
        self.channel = channel
        self.facts = facts
        self.report = report
        self.queued: QueuedConsumer | None = None  # set when subscribed
        self.stopping = False
        self.delivered = 0  # messages the channel took
        self.dropped_said = 0  # of the queue's dropped events, those already said
        self._burst: Burst | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._waiting_seen: set[tuple[int | None, str | None, object]] = set()

    def wake(self) -> None:
        if self.queued is not None:
            self.queued(EngineEvent(TICK))

    def offer(self, event: EngineEvent) -> None:
        """On the bus, synchronously: only what this rule wants enters its queue. Every
        agent.output of every agent comes here for `waiting`; queued as they came, they
        pushed task ends out of a queue held up by a slow channel (the oldest are dropped)."""
        notice = self._notice(event)
        if notice is not None and self.queued is not None:
            self.queued(EngineEvent(NOTICE, event.task_id, event.stage, {"notice": notice}))

    def stop_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    async def handle(self, event: EngineEvent) -> None:
        if event.kind == NOTICE:
            notice: Notice = event.data["notice"]
            if await self._wanted(notice):
                self._add(notice)
        burst = self._burst
        if burst is None:
            return
        last_in_line = self.queued is None or self.queued.behind <= 1
        if asyncio.get_running_loop().time() >= burst.deadline or (self.stopping and last_in_line):
            await self._deliver()

    def _notice(self, event: EngineEvent) -> Notice | None:
        name = self.rule.event_name(event.kind)
        if name == "source_error" and not _reminder(event.data.get("failures")):
            return None
        if name != "waiting":
            return notice_from(name, event) if name is not None else None
        reason = waiting_reason(event.data.get("events") or ())
        seen = (event.task_id, event.stage, event.data.get("attempt"))
        if reason is None or seen in self._waiting_seen:
            return None
        if len(self._waiting_seen) >= SEEN_LIMIT:
            self._waiting_seen.clear()
        self._waiting_seen.add(seen)
        return notice_from(name, event, reason)

    async def _wanted(self, notice: Notice) -> bool:
        """A rule for some workflows: the task's workflow is read now (events name none)."""
        if self.rule.workflows is None or notice.task_id is None:
            return True
        await self.facts.fill([notice])
        return notice.workflow in self.rule.workflows

    def _add(self, notice: Notice) -> None:
        if self._burst is None:
            self._burst = Burst(asyncio.get_running_loop().time() + self.rule.burst)
            self._timer = asyncio.get_running_loop().call_later(self.rule.burst, self.wake)
        self._burst.add(notice)

    async def _deliver(self) -> None:
        burst, self._burst = self._burst, None
        self.stop_timer()
        assert burst is not None
        dropped = self.queued.dropped if self.queued is not None else 0
        if dropped > self.dropped_said:  # the channel was too slow for its queue: not in silence
            self.report(f"notify: {self.rule.describe()} fell behind: {dropped - self.dropped_said} events were dropped"
                        " (the oldest waiting)")
            self.dropped_said = dropped
        await self.facts.fill([n for n in burst.notices if n.workflow is None])
        msg = message(burst.notices, burst.tally)
        try:
            delivered = await self.channel.deliver(msg)
        except asyncio.CancelledError:  # shutdown's bound ran out: the message is lost, and said so
            self.report(f"notify: {self.rule.describe()} had not delivered when tacx stopped: {msg.text[:200]}")
            raise
        if delivered:
            self.delivered += 1


def _reminder(failures: object) -> bool:
    """A source that keeps failing is polled every 15 minutes at most, each poll a
    source.failed: its 1st, 2nd, 4th, 8th, ... failure in a row are said (minutes, then
    hours apart), not each of the 96 a day a source down overnight would send."""
    return not isinstance(failures, int) or failures < 1 or failures & (failures - 1) == 0


def build_channel(rule: NotifyRule, home: Home, report: Callable[[str], None],
                  terminal: TerminalChannel | None) -> Channel | None:
    if rule.webhook is not None:
        return WebhookChannel(rule.webhook, rule.headers, rule.delivery_timeout, home.project_root.name, rule.describe(), report)
    if rule.command is not None:
        return CommandChannel(rule.command, rule.delivery_timeout, report, home.project_root)
    return terminal  # None: no terminal to write to (headless with stderr redirected)


class Notifier:
    """The rules' senders on one bus; `close` after the coordinator has run."""

    def __init__(self, senders: list[RuleSender]) -> None:
        self.senders = senders
        self._watch: asyncio.Task[None] | None = None
        self._unsubscribe: list[Callable[[], None]] = []

    def attach(self, bus: EventBus, stopping: asyncio.Event | None = None) -> None:
        for sender in self.senders:
            # Its own queue (drained at shutdown) hears nothing from the bus itself: offer feeds it.
            sender.queued = bus.subscribe_async(sender, kinds=())
            self._unsubscribe.append(bus.subscribe(sender.offer, kinds=sender.rule.kinds))
        if stopping is not None:
            self._watch = asyncio.get_running_loop().create_task(self._flush_on(stopping), name="tacx-notify-stop")

    async def _flush_on(self, stopping: asyncio.Event) -> None:
        """The coordinator stops: bursts go out now, not at their window's end (the bus's
        drain waits a bounded time for them)."""
        await stopping.wait()
        for sender in self.senders:
            sender.stopping = True
            sender.wake()

    async def close(self) -> None:
        for unsubscribe in self._unsubscribe:
            unsubscribe()
        self._unsubscribe.clear()
        if self._watch is not None:
            self._watch.cancel()
            await asyncio.gather(self._watch, return_exceptions=True)
        for sender in self.senders:
            sender.stop_timer()
            await sender.channel.close()


def start_notifications(
    home: Home, rules: list[NotifyRule], bus: EventBus, stopping: asyncio.Event | None, *,
    terminal: TerminalChannel | None, say: Callable[[str], None] | None = None,
) -> Notifier | None:
    """The notifier for tacx.yaml's `notify:` rules, subscribed to ``bus``; None (nothing
    subscribed, nothing spent) without rules."""
    if not rules:
        return None

    def report(line: str) -> None:
        """Said once: to ``say`` when given (headless, its stderr, where the log's console
        handler would print it a second time), else to the log."""
        if say is None:
            log.warning("%s", line)
            return
        log.info("%s", line)
        say(line)

    facts = TaskFacts(home.db_path)
    senders = []
    for rule in rules:
        channel = build_channel(rule, home, report, terminal)
        if channel is None:
            log.info("notify: a terminal rule, and no terminal to write to: it is left out")
            continue
        senders.append(RuleSender(rule, channel, facts, report))
    notifier = Notifier(senders)
    notifier.attach(bus, stopping)
    return notifier
