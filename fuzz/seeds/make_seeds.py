#!/usr/bin/env python3
"""Writes the seed inputs of the `notify_path` and `authorization_header`
fuzz targets into fuzz/corpus/<target>/ from the committed test keys
(tests/fixtures/, public test data), with an implementation independent of
ours (Python `cryptography`). Deterministic: rerunning rewrites the same
files. Constants match fuzz/src/lib.rs.

    python3 fuzz/seeds/make_seeds.py
"""

import base64
import hashlib
import json
import pathlib
import struct

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

ROOT = pathlib.Path(__file__).resolve().parents[2]
FIX = ROOT / "tests" / "fixtures"
NOW = 1_714_000_000
PUB_KEY_ID = "PUB_KEY_ID_0112345678901234567890123456789012"
MCHID, SUB_MCHID, APPID = "1900000109", "1900000110", "wxd678efh567hg6787"
ORDER_NO = "FZ20240425001"
SIGN_NONCE = "593BEC0C930BF1AFEB40B4A08C8FB242"
AEAD_NONCE = "fuzz0nonce00"
PLATFORM_SERIAL = "0A6C3E5D1F2B4978E6A0C1D2B3F4A5968778695A"

APIV3 = (FIX / "apiv3_key.txt").read_text().strip().encode()
WXKEY = serialization.load_pem_private_key((FIX / "wechatpay_key.pem").read_bytes(), None)
PLATKEY = serialization.load_pem_private_key((FIX / "platform_key.pem").read_bytes(), None)


def dumps(v):
    return json.dumps(v, ensure_ascii=False, separators=(",", ":")).encode()


def transaction(state="SUCCESS", amounts=(100, 250), **over):
    subs = [
        {
            "mchid": m,
            "trade_type": "JSAPI",
            "trade_state": state,
            "bank_type": "OTHERS",
            "attach": f"attach-{n}",
            "success_time": "2024-04-25T07:06:40+08:00",
            "transaction_id": f"42000020{i}2024042512345678",
            "out_trade_no": f"{ORDER_NO}-{n}",
            "amount": {
                "total_amount": a,
                "payer_amount": a,
                "currency": "CNY",
                "payer_currency": "CNY",
            },
        }
        for i, (m, n, a) in enumerate(zip((MCHID, SUB_MCHID), ("S1", "S2"), amounts))
    ]
    t = {
        "combine_appid": APPID,
        "combine_mchid": MCHID,
        "combine_out_trade_no": ORDER_NO,
        "scene_info": {"device_id": "POS1:1"},
        "sub_orders": subs,
        "combine_payer_info": {"openid": "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"},
    }
    t.update(over)
    return t


def envelope(plaintext, ad="transaction", nonce=AEAD_NONCE, tamper_tag=False, id_="EV-0001"):
    ct = AESGCM(APIV3).encrypt(nonce.encode(), plaintext, ad.encode())
    if tamper_tag:
        ct = ct[:-1] + bytes([ct[-1] ^ 1])
    return dumps(
        {
            "id": id_,
            "create_time": "2024-04-25T07:06:41+08:00",
            "resource_type": "encrypt-resource",
            "event_type": "TRANSACTION.SUCCESS",
            "summary": "支付成功",
            "resource": {
                "algorithm": "AEAD_AES_256_GCM",
                "ciphertext": base64.b64encode(ct).decode(),
                "associated_data": ad,
                "original_type": "transaction",
                "nonce": nonce,
            },
        }
    )


def sign(key, ts, nonce, body):
    msg = f"{ts}\n{nonce}\n".encode() + body + b"\n"
    return base64.b64encode(key.sign(msg, padding.PKCS1v15(), hashes.SHA256())).decode()


def raw(body, ts=NOW, serial=PUB_KEY_ID, key=WXKEY, sig=None, extra=""):
    s = sig if sig is not None else sign(key, ts, SIGN_NONCE, body)
    head = (
        f"Wechatpay-Timestamp: {ts}\nWechatpay-Nonce: {SIGN_NONCE}\n"
        f"Wechatpay-Signature: {s}\nWechatpay-Serial: {serial}\n"
        f"Wechatpay-Signature-Type: WECHATPAY2-SHA256-RSA2048\n{extra}"
    )
    return head.encode() + b"\n" + body


def write(target, seeds):
    d = ROOT / "fuzz" / "corpus" / target
    d.mkdir(parents=True, exist_ok=True)
    for data in seeds:
        (d / hashlib.sha1(data).hexdigest()).write_bytes(data)
    print(f"{target}: {len(seeds)} seeds in {d.relative_to(ROOT)}")


good = dumps(transaction())
notify = [
    # mode 1: plaintexts (sealed and signed by the target)
    b"\x01" + good,
    b"\x01" + dumps(transaction(state="CLOSED")),
    b"\x01" + dumps(transaction(amounts=(100, 251))),
    b"\x01" + dumps(transaction(combine_mchid="1900000999")),
    b"\x01" + dumps(transaction(sub_orders=transaction()["sub_orders"][:1])),
    b"\x01" + b"not json at all",
    # mode 0: bodies after the signature check
    b"\x00" + envelope(good),
    b"\x00" + envelope(good, ad="certificate"),
    b"\x00" + envelope(good, tamper_tag=True),
    b"\x00" + envelope(b"[1,2,3]"),
    b"\x00" + b'{"id":"x"}',
    # mode 3: raw bodies (signed by the target, whole path)
    b"\x03" + envelope(good),
    b"\x03" + envelope(good, tamper_tag=True),
    # mode 2: headers and body as received
    b"\x02" + raw(envelope(good)),
    b"\x02" + raw(envelope(good), ts=NOW - 301),
    b"\x02" + raw(envelope(good), serial=PLATFORM_SERIAL, key=PLATKEY),
    b"\x02" + raw(envelope(good), serial="5157F09EFDC096DE15EBE81A47057A72"),
    b"\x02" + raw(envelope(good), sig="WECHATPAY/SIGNTEST/" + "A" * 40),
]
write("notify_path", notify)

auth_value = (
    f'WECHATPAY2-SHA256-RSA2048 mchid="{MCHID}",nonce_str="{SIGN_NONCE}",'
    f'timestamp="{NOW}",serial_no="{PLATFORM_SERIAL}",signature="{"Q" * 344}"'
)
clock = struct.pack("<q", NOW)
auth = [
    clock + b"\x00" + auth_value.encode(),
    clock + b"\x00" + auth_value.replace(",", " , ").encode(),
    clock + b"\x00" + b'WECHATPAY2-SHA256-RSA2048 signature="x",timestamp="1",mchid="1",serial_no="s",nonce_str="n"',
    clock + b"\x01" + raw(b"{}", sig="Zm9v")[:-3],
    clock + b"\x01" + raw(b"{}", ts=NOW + 301, sig="Zm9v")[:-3],
    struct.pack("<q", -(2**63)) + b"\x01" + raw(b"{}", ts=2**63 - 1, sig="Zm9v")[:-3],
    clock + b"\x01" + raw(b"{}", serial=PLATFORM_SERIAL, sig="WECHATPAY/SIGNTEST/abc")[:-3],
]
write("authorization_header", auth)
