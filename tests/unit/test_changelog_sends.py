"""What a table flush waits for before its messages are acknowledged
(``streams.tables.ChangelogSends``): the changelog messages sent until then, not those sent
after. Plain asyncio futures stand in for Faust's ``FutureMessage`` (one of them), resolved
as the producer would on the broker's acknowledgement."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from streams.tables import ChangelogSends


def sent(sends: ChangelogSends) -> asyncio.Future[Any]:
    message: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    sends.add(message)  # type: ignore[arg-type]
    return message


async def settled(awaitable: Any) -> bool:
    task = asyncio.ensure_future(awaitable)
    await asyncio.sleep(0.01)
    return task.done()


async def test_a_delivery_waits_for_every_message_sent_before_it_and_none_after() -> None:
    sends = ChangelogSends()
    first, second = sent(sends), sent(sends)
    delivered = asyncio.ensure_future(sends.delivered())
    later = sent(sends)  # the next flush's: this delivery must not wait for it
    first.set_result(None)
    assert not await settled(asyncio.shield(delivered))
    second.set_result(None)
    await asyncio.wait_for(delivered, 1)
    assert not later.done()


async def test_a_delivery_covers_the_messages_of_earlier_flushes_still_in_flight() -> None:
    sends = ChangelogSends()
    earlier = sent(sends)
    sends.delivered().close()  # the earlier flush's delivery, never awaited here
    own = sent(sends)
    delivered = asyncio.ensure_future(sends.delivered())
    own.set_result(None)
    assert not await settled(asyncio.shield(delivered))
    earlier.set_result(None)
    await asyncio.wait_for(delivered, 1)


async def test_a_failed_message_fails_its_delivery_and_every_later_one() -> None:
    sends = ChangelogSends()
    sent(sends).set_exception(OSError("broker gone"))
    with pytest.raises(OSError):
        await sends.delivered()
    sent(sends).set_result(None)
    with pytest.raises(OSError):
        await sends.delivered()


async def test_a_cancelled_message_fails_its_delivery() -> None:
    sends = ChangelogSends()
    sent(sends).cancel()
    delivery = sends.delivered()  # called inside a table flush: it must not raise there
    with pytest.raises(asyncio.CancelledError):
        await delivery


async def test_acknowledged_messages_are_let_go() -> None:
    sends = ChangelogSends()
    for _ in range(1_000):
        sent(sends).set_result(None)
    await sends.delivered()
    pending = sent(sends)
    assert not await settled(sends.delivered())
    pending.set_result(None)
    assert len(sends._sent) == 1  # noted until the next delivery is asked for
    await sends.delivered()
    assert sends._sent == []
