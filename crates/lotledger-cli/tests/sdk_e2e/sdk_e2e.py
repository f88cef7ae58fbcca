#!/usr/bin/env python3
"""End-to-end check of `lotledger serve` with the real aleph-sdk-python 2.4.0.

Usage: sdk_e2e.py http://127.0.0.1:PORT

The server must start on an EMPTY store, accept channel ALEPH_CREDIT and whitelist
0x19E7E376E7C213B7E7e7e46cc70A5dD086DAff2A (the key 0x11 repeated 32 times). Every check
prints `ok <name>`; the first failing check prints `FAIL <name>: ...` and the script exits 1.
Run by crates/lotledger-cli/tests/sdk_e2e.rs (`cargo test -p lotledger-cli --test sdk_e2e`).

Writes go through the SDK's own publishing (`create_post`, sync=True); reads through its
`get_balances`, `get_credit_history`, `get_message`, `get_message_error`, `get_messages` (page
mode), `get_messages_cursor` and `watch_messages` (the websocket). What the SDK has no method for
(the per-expiry balance breakdown, a raw tampered envelope) goes through the SDK client's own
aiohttp session (`client.http_session`).
"""

import asyncio
import datetime as dt
import logging
import sys
import time
from importlib.metadata import version
from typing import Any, Dict, List, Optional, Tuple

from aleph.sdk.chains.ethereum import ETHAccount
from aleph.sdk.client import AlephHttpClient, AuthenticatedAlephHttpClient
from aleph.sdk.conf import settings
from aleph.sdk.exceptions import InvalidMessageError, MessageNotFoundError
from aleph.sdk.query.filters import MessageFilter, SortOrder
from aleph_message.models import MessageType, PostContent
from aleph_message.status import MessageStatus

SDK_VERSION = "2.4.0"
CHANNEL = "ALEPH_CREDIT"
WHITELISTED_ADDRESS = "0x19E7E376E7C213B7E7e7e46cc70A5dD086DAff2A"
FAR_EXPIRY_MS = 4102444800000  # 2100-01-01T00:00:00Z: the test never depends on the date
FAR_EXPIRY = dt.datetime(2100, 1, 1, tzinfo=dt.timezone.utc)
FAR_EXPIRY_TEXT = "2100-01-01T00:00:00Z"
PRICE = "0.000001"
# The SDK sets content.time to now; after CREDIT_PRECISION_CUTOFF_TIMESTAMP amounts are
# stored as sent (no x10000).
PRECISION_CUTOFF = 1769990400
# Seconds allowed for one SDK call (not passed as `timeout=`: in SDK 2.4.0 a client built with
# a timeout serialises JSON bodies with a function that returns a dict, and every POST fails).
CALL_SECONDS = 60

# Keep a stray ALEPH_* environment (or .env file) from redirecting the client.
settings.API_UNIX_SOCKET = None
settings.ADDRESS_TO_USE = None
# The SDK logs each expected rejection at ERROR; the check lines say it all.
logging.getLogger("aleph").setLevel(logging.CRITICAL)


def key(byte: int) -> ETHAccount:
    return ETHAccount(private_key=bytes([byte]) * 32)


WHITELISTED = key(0x11)
HOLDER_A = key(0x22)
HOLDER_B = key(0x33)
A = HOLDER_A.get_address()
B = HOLDER_B.get_address()


class CheckFailed(Exception):
    pass


def ok(name: str) -> None:
    print(f"ok {name}", flush=True)


def eq(name: str, expected: Any, got: Any) -> None:
    if expected != got:
        raise CheckFailed(f"{name}: expected {expected!r}, got {got!r}")
    ok(name)


def describe(exc: BaseException) -> str:
    return f"{type(exc).__module__}.{type(exc).__name__}: {exc}"


async def bounded(call: Any) -> Any:
    return await asyncio.wait_for(call, CALL_SECONDS)


def client_for(account: ETHAccount, api: str) -> AuthenticatedAlephHttpClient:
    return AuthenticatedAlephHttpClient(
        account=account, api_server=api, allow_unix_sockets=False
    )


async def publish(
    name: str, signer: ETHAccount, api: str, post_type: str, content: Dict[str, Any]
) -> Any:
    """create_post(sync=True) must succeed with status processed; returns the message."""
    try:
        async with client_for(signer, api) as client:
            message, status = await bounded(client.create_post(
                post_content=content,
                post_type=post_type,
                channel=CHANNEL,
                sync=True,
            ))
    except Exception as exc:  # noqa: BLE001 - any error fails the check
        raise CheckFailed(f"{name}: expected HTTP 200 processed, got {describe(exc)}")
    eq(name, MessageStatus.PROCESSED, status)
    if not message.content.time >= PRECISION_CUTOFF:
        raise CheckFailed(f"{name}: content.time {message.content.time} is before the cutoff")
    return message


async def publish_rejected(
    name: str, signer: ETHAccount, api: str, post_type: str, content: Dict[str, Any]
) -> None:
    """create_post(sync=True) must raise InvalidMessageError (HTTP 422, rejected body)."""
    try:
        async with client_for(signer, api) as client:
            _, status = await bounded(client.create_post(
                post_content=content,
                post_type=post_type,
                channel=CHANNEL,
                sync=True,
            ))
    except InvalidMessageError as exc:
        ok(name)
        body = exc.args[0] if exc.args else None
        eq(f"{name}.body", {
            "publication_status": {"status": "success", "failed": []},
            "message_status": "rejected",
        }, body)
        return
    except Exception as exc:  # noqa: BLE001
        raise CheckFailed(f"{name}: expected InvalidMessageError, got {describe(exc)}")
    raise CheckFailed(f"{name}: expected InvalidMessageError, got status {status!r}")


async def balance(name: str, reader: AlephHttpClient, address: str, expected: int) -> None:
    try:
        got = (await bounded(reader.get_balances(address))).credit_balance
    except Exception as exc:  # noqa: BLE001
        raise CheckFailed(f"{name}: get_balances failed: {describe(exc)}")
    eq(name, expected, got)


async def balance_details(
    name: str, reader: AlephHttpClient, address: str, expected: List[Dict[str, Any]]
) -> None:
    """The per-expiry breakdown (no SDK method: through the SDK client's session)."""
    async with reader.http_session.get(
        f"/api/v0/addresses/{address}/balance",
        params={"include_credit_details": "true"},
    ) as resp:
        eq(f"{name}.status", 200, resp.status)
        body = await resp.json()
    eq(name, expected, body.get("credit_balance_details"))


def aware_utc(value: Optional[dt.datetime]) -> Optional[dt.datetime]:
    if value is None:
        return None
    if value.tzinfo is None:
        raise CheckFailed(f"timestamp {value.isoformat()} has no UTC offset")
    return value.astimezone(dt.timezone.utc)


def content_time(message: Any) -> dt.datetime:
    return dt.datetime.fromtimestamp(message.content.time, dt.timezone.utc)


async def history(
    name: str,
    reader: AlephHttpClient,
    address: str,
    expected: List[Tuple[Any, int, int, Optional[str], Optional[dt.datetime]]],
) -> None:
    """`expected`: (message, credit_index, amount, payment_method, expiration_date), in the
    API's default order (message_timestamp DESC, then credit_ref, credit_index DESC)."""
    try:
        page = await bounded(reader.get_credit_history(address, page_size=100, page=1))
    except Exception as exc:  # noqa: BLE001
        raise CheckFailed(f"{name}: get_credit_history failed: {describe(exc)}")
    eq(f"{name}.address", address, page.address)
    eq(f"{name}.pagination_total", len(expected), page.pagination_total)
    eq(f"{name}.rows", len(expected), len(page.credit_history))
    want = [
        (str(msg.item_hash), index, amount, method, exp)
        for msg, index, amount, method, exp in expected
    ]
    got = [
        (str(item.credit_ref), item.credit_index, item.amount, item.payment_method,
         aware_utc(item.expiration_date))
        for item in page.credit_history
    ]
    eq(f"{name}.order_refs_amounts_methods_expiries", want, got)
    for (msg, index, _, _, _), item in zip(expected, page.credit_history):
        # The row's instant is the message's content.time (pyaleph keeps microseconds;
        # allow one for float rounding).
        stamp = aware_utc(item.message_timestamp)
        if abs(stamp - content_time(msg)) > dt.timedelta(microseconds=1):
            raise CheckFailed(
                f"{name}.message_timestamp[{index}]: expected {content_time(msg)}, got {stamp}"
            )
    ok(f"{name}.message_timestamps")


async def run(api: str) -> None:
    eq("setup.sdk_version", SDK_VERSION, version("aleph-sdk-python"))
    eq("setup.whitelisted_address", WHITELISTED_ADDRESS, WHITELISTED.get_address())

    async with AlephHttpClient(api_server=api, allow_unix_sockets=False) as reader:
        await balance("setup.empty_balance_A", reader, A, 0)

        # 1. Whitelisted distribution to A: an expiring lot, then a non-expiring one.
        distribution = await publish(
            "distribution.processed", WHITELISTED, api, "aleph_credit_distribution",
            {"distribution": {"token": "ALEPH", "chain": "ETH", "credits": [
                {"address": A, "amount": 5_000_000, "price": PRICE,
                 "tx_hash": "0x" + "a1" * 32, "provider": "ALEPH",
                 "expiration": FAR_EXPIRY_MS, "payment_method": "card"},
                {"address": A, "amount": 2_000_000, "price": PRICE,
                 "tx_hash": "0x" + "a2" * 32, "provider": "ALEPH"},
            ]}},
        )
        await balance("distribution.balance_A", reader, A, 7_000_000)
        await balance_details("distribution.details_A", reader, A, [
            {"expiration_date": None, "amount": 2_000_000},
            {"expiration_date": FAR_EXPIRY_TEXT, "amount": 5_000_000},
        ])

        # 2. A -> B: emission order drains A's first (expiring) lot; B's lot keeps its expiry.
        transfer = await publish(
            "transfer.processed", HOLDER_A, api, "aleph_credit_transfer",
            {"transfer": {"credits": [{"address": B, "amount": 1_500_000}]}},
        )
        await balance("transfer.balance_A", reader, A, 5_500_000)
        await balance("transfer.balance_B", reader, B, 1_500_000)
        await balance_details("transfer.details_B", reader, B, [
            {"expiration_date": FAR_EXPIRY_TEXT, "amount": 1_500_000},
        ])

        # 3. A transfers more than it holds: 422, the SDK raises, nothing changes.
        await publish_rejected(
            "overdraft.rejected", HOLDER_A, api, "aleph_credit_transfer",
            {"transfer": {"credits": [{"address": B, "amount": 5_500_001}]}},
        )
        await balance("overdraft.balance_A_unchanged", reader, A, 5_500_000)
        await balance("overdraft.balance_B_unchanged", reader, B, 1_500_000)

        # 4. Whitelisted expense on A: drains the expiring lot first.
        expense = await publish(
            "expense.processed", WHITELISTED, api, "aleph_credit_expense",
            {"expense": {"credits": [
                {"address": A, "amount": 700_000, "ref": "vm1", "execution_id": "vm1",
                 "node_id": "n1", "price": PRICE, "time": 3600.0},
            ]}},
        )
        await balance("expense.balance_A", reader, A, 4_800_000)
        await balance_details("expense.details_A", reader, A, [
            {"expiration_date": None, "amount": 2_000_000},
            {"expiration_date": FAR_EXPIRY_TEXT, "amount": 2_800_000},
        ])

        # 5. A's credit history, default order (newest first).
        await history("history_A", reader, A, [
            (expense, 0, -700_000, "credit_expense", None),
            (transfer, 1, -1_500_000, "credit_transfer", None),
            (distribution, 1, 2_000_000, None, None),
            (distribution, 0, 5_000_000, "card", FAR_EXPIRY),
        ])
        await history("history_B", reader, B, [
            (transfer, 0, 1_500_000, "credit_transfer", FAR_EXPIRY),
        ])
        eq("message_error.distribution_none", None,
           await bounded(reader.get_message_error(str(distribution.item_hash))))

        # The messages as the node keeps them: `get_message` parses the stored envelope.
        for name, published in (("distribution", distribution), ("transfer", transfer),
                                ("expense", expense)):
            got, status = await bounded(
                reader.get_message(str(published.item_hash), with_status=True))
            eq(f"get_message.{name}.status", "processed", status)
            eq(f"get_message.{name}.envelope",
               (published.item_hash, published.sender, published.chain, published.signature,
                published.item_type, published.item_content, published.time,
                published.channel),
               (got.item_hash, got.sender, got.chain, got.signature, got.item_type,
                got.item_content, got.time, got.channel))
            eq(f"get_message.{name}.content", published.content.content, got.content.content)
            eq(f"get_message.{name}.type", published.content.type, got.content.type)
        try:
            await bounded(reader.get_message("00" * 32))
        except MessageNotFoundError:
            ok("get_message.unknown_not_found")
        else:
            raise CheckFailed("get_message.unknown_not_found: no MessageNotFoundError")

        # 6. A genuine transfer A -> B whose signature gets one hex digit changed: 422,
        #    recorded as rejected with the signature error; nothing changes.
        genuine = await tampered_then_genuine(api, reader)

        # 7. The processed credit messages listed and watched as the SDK reads them.
        processed = [str(m.item_hash) for m in (distribution, transfer, expense)] + [genuine]
        await listed_and_watched(api, reader, processed)


CREDIT_FILTER = dict(
    channels=[CHANNEL], message_types=[MessageType.post],
    content_types=["aleph_credit_distribution", "aleph_credit_expense", "aleph_credit_transfer"],
)


def hashes_of(messages: Any) -> List[str]:
    return [str(m.item_hash) for m in messages]


async def listed_and_watched(api: str, reader: AlephHttpClient, processed: List[str]) -> None:
    """`processed`: the hashes of the processed credit messages, oldest first (rejected ones
    are never listed)."""
    newest_first = list(reversed(processed))
    page = await bounded(reader.get_messages(
        page_size=2, page=1, message_filter=MessageFilter(**CREDIT_FILTER)))
    eq("get_messages.page_1", newest_first[:2], hashes_of(page.messages))
    eq("get_messages.total", len(processed), page.pagination_total)
    page = await bounded(reader.get_messages(
        page_size=2, page=2, message_filter=MessageFilter(**CREDIT_FILTER)))
    eq("get_messages.page_2", newest_first[2:4], hashes_of(page.messages))

    walked: List[str] = []
    cursor = ""
    ascending = MessageFilter(**CREDIT_FILTER, sort_order=SortOrder.ASCENDING)
    while True:
        page = await bounded(reader.get_messages_cursor(
            page_size=3, cursor=cursor, message_filter=ascending))
        walked += hashes_of(page.messages)
        if not page.next_cursor:
            break
        cursor = page.next_cursor
    eq("get_messages_cursor.oldest_first", processed, walked)

    # The websocket: the history (newest 10, oldest first), then a message published now.
    watch = reader.watch_messages(MessageFilter(**CREDIT_FILTER))
    history = [await asyncio.wait_for(watch.__anext__(), CALL_SECONDS) for _ in processed]
    eq("watch_messages.history", processed, hashes_of(history))
    pushed = await publish(
        "watched.processed", HOLDER_A, api, "aleph_credit_transfer",
        {"transfer": {"credits": [{"address": B, "amount": 1}]}},
    )
    live = await asyncio.wait_for(watch.__anext__(), CALL_SECONDS)
    eq("watch_messages.live", str(pushed.item_hash), str(live.item_hash))
    eq("watch_messages.live_content", pushed.content.content, live.content.content)
    await watch.aclose()


async def tampered_then_genuine(api: str, reader: AlephHttpClient) -> str:
    content = PostContent(
        type="aleph_credit_transfer",
        address=A,
        content={"transfer": {"credits": [{"address": B, "amount": 100_000}]}},
        time=time.time(),
    ).model_dump(exclude_none=True)
    async with client_for(HOLDER_A, api) as client:
        message = await bounded(client.generate_signed_message(
            message_type=MessageType.post, content=content, channel=CHANNEL,
        ))
        # The envelope exactly as the SDK broadcasts it (its session serialises the JSON).
        genuine = message.model_dump(include=client.BROADCAST_MESSAGE_FIELDS)
        item_hash = str(genuine["item_hash"])
        signature = genuine["signature"]
        digit = signature[10]
        tampered = dict(genuine, signature=signature[:10]
                        + ("0" if digit != "0" else "1") + signature[11:])
        if tampered["signature"] == signature or len(tampered["signature"]) != len(signature):
            raise CheckFailed("tamper: the signature did not change by exactly one digit")

        async with client.http_session.post(
            "/api/v0/messages", json={"sync": True, "message": tampered}
        ) as resp:
            eq("tampered.status_422", 422, resp.status)
            body = await resp.json()
        eq("tampered.body", {
            "publication_status": {"status": "success", "failed": []},
            "message_status": "rejected",
        }, body)
        await balance("tampered.balance_A_unchanged", reader, A, 4_800_000)
        await balance("tampered.balance_B_unchanged", reader, B, 1_500_000)
        error = await bounded(reader.get_message_error(item_hash))
        eq("tampered.message_error", {
            "error_code": 1,
            "details": {"errors": ["The signature of the message is invalid"]},
        }, error)

        # The same item hash, correctly signed, is processed afresh (a rejected hash may be
        # submitted again).
        async with client.http_session.post(
            "/api/v0/messages", json={"sync": True, "message": genuine}
        ) as resp:
            eq("genuine_after_tamper.status_200", 200, resp.status)
            body = await resp.json()
        eq("genuine_after_tamper.body", {
            "publication_status": {"status": "success", "failed": []},
            "message_status": "processed",
        }, body)
    await balance("genuine_after_tamper.balance_A", reader, A, 4_700_000)
    await balance("genuine_after_tamper.balance_B", reader, B, 1_600_000)
    eq("genuine_after_tamper.message_error_none", None,
       await bounded(reader.get_message_error(item_hash)))
    kept = await bounded(reader.get_message(item_hash))
    eq("genuine_after_tamper.kept_signature", genuine["signature"], kept.signature)
    return item_hash


def main() -> int:
    if len(sys.argv) != 2:
        print("usage: sdk_e2e.py http://127.0.0.1:PORT", file=sys.stderr)
        return 2
    try:
        asyncio.run(run(sys.argv[1].rstrip("/")))
    except CheckFailed as failure:
        print(f"FAIL {failure}", flush=True)
        return 1
    print("all checks passed", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
