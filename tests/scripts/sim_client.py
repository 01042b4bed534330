#!/usr/bin/env python3
"""An independent WeChat Pay APIv3 client for the simulator tests.

Written from the protocol description only, with the standard library
(urllib) and the `cryptography` package: it signs a combined-order prepay
itself (Authorization fields in the PHP SDK's order, JSON indented and not
ASCII-escaped), sends it, and verifies the signed answers with its own code.
Prints one JSON object with what it saw.

usage: sim_client.py --base http://127.0.0.1:PORT --dir DATA_DIR --order NO
"""

import argparse
import base64
import json
import secrets
import string
import sys
import time
import urllib.error
import urllib.request

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding

ALPHABET = string.ascii_letters + string.digits


def nonce(n=32):
    return "".join(secrets.choice(ALPHABET) for _ in range(n))


def request_signature(key, method, path, ts, nonce_str, body):
    message = f"{method}\n{path}\n{ts}\n{nonce_str}\n".encode() + body + b"\n"
    return base64.b64encode(key.sign(message, padding.PKCS1v15(), hashes.SHA256())).decode()


def verify_answer(public_key, headers, body):
    """WeChat Pay's answer signature: timestamp\\nnonce\\nbody\\n, SHA256withRSA."""
    ts = headers.get("Wechatpay-Timestamp")
    nonce_str = headers.get("Wechatpay-Nonce")
    signature = headers.get("Wechatpay-Signature")
    if not (ts and nonce_str and signature):
        return False
    if abs(time.time() - int(ts)) >= 300:
        return False
    message = f"{ts}\n{nonce_str}\n".encode() + body + b"\n"
    try:
        public_key.verify(base64.b64decode(signature), message, padding.PKCS1v15(), hashes.SHA256())
        return True
    except Exception:
        return False


def call(base, creds, key, method, path, body=b""):
    ts = str(int(time.time()))
    n = nonce()
    sig = request_signature(key, method, path, ts, n, body)
    authorization = (
        f'WECHATPAY2-SHA256-RSA2048 mchid="{creds["mchid"]}",serial_no="{creds["serial_no"]}",'
        f'timestamp="{ts}",nonce_str="{n}",signature="{sig}"'
    )
    headers = {
        "Authorization": authorization,
        "Accept": "application/json",
        "User-Agent": "independent-python-client/1.0",
        "Wechatpay-Serial": creds["wechatpay_public_key_id"],
    }
    if body:
        headers["Content-Type"] = "application/json; charset=utf-8"
    req = urllib.request.Request(base + path, data=body or None, method=method, headers=headers)
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(req, timeout=10) as resp:
            return resp.status, resp.headers, resp.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--base", required=True)
    ap.add_argument("--dir", required=True)
    ap.add_argument("--order", required=True)
    args = ap.parse_args()

    with open(f"{args.dir}/merchant.json", encoding="utf-8") as f:
        creds = json.load(f)
    with open(f"{args.dir}/merchant_key.pem", "rb") as f:
        key = serialization.load_pem_private_key(f.read(), password=None)
    with open(f"{args.dir}/wechatpay_public_key.pem", "rb") as f:
        wechatpay_key = serialization.load_pem_public_key(f.read())

    no = args.order
    order = {
        "sub_orders": [
            {"description": "独立客户端 甲", "out_trade_no": no + "A", "attach": "py-a",
             "mchid": creds["sub_mchids"][0], "amount": {"currency": "CNY", "total_amount": 88}},
            {"description": "独立客户端 乙", "out_trade_no": no + "B", "attach": "py-b",
             "mchid": creds["sub_mchids"][2], "amount": {"total_amount": 12, "currency": "CNY"}},
        ],
        "notify_url": "http://127.0.0.1:9/python/notify",
        "combine_payer_info": {"openid": creds["demo_openid"]},
        "combine_out_trade_no": no,
        "combine_mchid": creds["mchid"],
        "combine_appid": creds["appid"],
    }
    body = json.dumps(order, ensure_ascii=False, indent=1).encode("utf-8")
    status, headers, answer = call(args.base, creds, key, "POST", "/v3/combine-transactions/jsapi", body)
    out = {
        "prepay_status": status,
        "prepay_body": answer.decode("utf-8", "replace"),
        "prepay_serial": headers.get("Wechatpay-Serial"),
        "prepay_verified": verify_answer(wechatpay_key, headers, answer),
        "tampered_verified": verify_answer(wechatpay_key, headers, answer + b" "),
    }
    if status == 200:
        out["prepay_id"] = json.loads(answer)["prepay_id"]
    status, headers, answer = call(args.base, creds, key, "GET", "/v3/combine-transactions/out-trade-no/" + no)
    out["query_status"] = status
    out["query_verified"] = verify_answer(wechatpay_key, headers, answer)
    if status == 200:
        out["trade_states"] = [s["trade_state"] for s in json.loads(answer)["sub_orders"]]
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
