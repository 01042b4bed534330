/* WeChat Pay simulator: a stand-in for WeChat's in-app WeixinJSBridge.
 * Load it with <script src="http://SIM/sim/bridge.js"></script>.
 * Query flags: delay=MS (default 300) before WeixinJSBridgeReady fires;
 * tamper=1 alters paySign before confirming (the simulator answers :fail).
 * The page's URL goes with the request: a page outside the merchant's
 * registered pay directories gets :fail with 当前页面的URL未注册.
 * Under the lose_bridge_answer fault the payer's choice reaches the cashier
 * but the callback never runs (a lost answer: the page's timeout applies).
 * The cashier buttons have ids wxsim-pay and wxsim-cancel. */
(function () {
  'use strict';
  if (window.WeixinJSBridge) { return; }
  var script = document.currentScript;
  var src = new URL(script && script.src ? script.src : '/sim/bridge.js', window.location.href);
  var origin = src.origin;
  var delay = parseInt(src.searchParams.get('delay') || '300', 10);
  var tamperFlag = src.searchParams.get('tamper') === '1';

  function yuan(fen) {
    fen = Number(fen) || 0;
    var cents = String(fen % 100);
    return Math.floor(fen / 100) + '.' + (cents.length < 2 ? '0' + cents : cents);
  }

  function tamper(sign) {
    sign = String(sign || '');
    if (!sign) { return 'AAAA'; }
    var c = sign.charAt(0) === 'A' ? 'B' : 'A';
    return c + sign.slice(1);
  }

  function el(tag, style, text) {
    var e = document.createElement(tag);
    if (style) { e.style.cssText = style; }
    if (text !== undefined) { e.textContent = text; }
    return e;
  }

  function showCashier(info, choose) {
    var old = document.getElementById('wxsim-cashier');
    if (old) { old.parentNode.removeChild(old); }
    var overlay = el('div', 'position:fixed;left:0;top:0;right:0;bottom:0;background:rgba(0,0,0,.55);' +
      'z-index:2147483647;display:flex;align-items:flex-end;justify-content:center;font-family:sans-serif');
    overlay.id = 'wxsim-cashier';
    var sheet = el('div', 'background:#fff;width:100%;max-width:480px;border-radius:12px 12px 0 0;padding:20px;' +
      'box-sizing:border-box;text-align:center;color:#111');
    var title = el('div', 'font-size:13px;color:#888;margin-bottom:8px', 'WeChat Pay simulator · 微信支付（模拟）');
    var name = el('div', 'font-size:16px;margin-bottom:6px', info.merchant_name || '未知商户');
    name.id = 'wxsim-merchant';
    var total = el('div', 'font-size:32px;font-weight:600;margin-bottom:16px',
      info.total_amount === undefined ? '—' : '¥' + yuan(info.total_amount));
    total.id = 'wxsim-total';
    var list = el('div', 'font-size:13px;color:#555;margin-bottom:16px;text-align:left');
    (info.sub_orders || []).forEach(function (s) {
      list.appendChild(el('div', 'display:flex;justify-content:space-between;padding:2px 0', ''));
      var row = list.lastChild;
      row.appendChild(el('span', '', s.description || ''));
      row.appendChild(el('span', '', '¥' + yuan(s.total_amount)));
    });
    if (info.error) { list.appendChild(el('div', 'color:#c00', info.error)); }
    var pay = el('button', 'display:block;width:100%;padding:12px;border:0;border-radius:8px;background:#07c160;' +
      'color:#fff;font-size:17px;margin-bottom:8px;cursor:pointer', '支付 Pay');
    pay.id = 'wxsim-pay';
    pay.type = 'button';
    var cancel = el('button', 'display:block;width:100%;padding:12px;border:0;border-radius:8px;background:#f2f2f2;' +
      'color:#111;font-size:17px;cursor:pointer', '取消 Cancel');
    cancel.id = 'wxsim-cancel';
    cancel.type = 'button';
    var done = false;
    function pick(action) {
      if (done) { return; }
      done = true;
      overlay.parentNode.removeChild(overlay);
      choose(action);
    }
    pay.addEventListener('click', function () { pick('pay'); });
    cancel.addEventListener('click', function () { pick('cancel'); });
    [title, name, total, list, pay, cancel].forEach(function (c) { sheet.appendChild(c); });
    overlay.appendChild(sheet);
    document.body.appendChild(overlay);
  }

  function getBrandWCPayRequest(params, cb) {
    var p = {};
    Object.keys(params || {}).forEach(function (k) { p[k] = params[k]; });
    // WeChat knows the paying page: the cashier checks it against the
    // merchant's registered pay directories.
    var page = window.location.href;
    fetch(origin + '/sim/cashier/order?package=' + encodeURIComponent(p['package'] || '') +
      '&page_url=' + encodeURIComponent(page))
      .then(function (r) { return r.json(); })
      .catch(function () { return { error: 'simulator unreachable' }; })
      .then(function (info) {
        // Refused before the cashier opens (当前页面的URL未注册).
        if (info && info.refused) { cb(info.refused); return; }
        showCashier(info, function (action) {
          var body = {};
          Object.keys(p).forEach(function (k) { body[k] = p[k]; });
          body.action = action;
          body.page_url = page;
          if (action === 'pay' && (tamperFlag || info.tamper_pay_sign)) { body.paySign = tamper(body.paySign); }
          fetch(origin + '/sim/cashier/confirm', {
            method: 'POST',
            headers: { 'Content-Type': 'application/json' },
            body: JSON.stringify(body)
          })
            .then(function (r) { return r.json(); })
            .then(function (res) { if (!info.lose_answer) { cb(res); } },
                  function () { cb({ err_msg: 'get_brand_wcpay_request:fail', err_desc: 'simulator unreachable' }); });
        });
      });
  }

  var bridge = {
    invoke: function (name, params, cb) {
      cb = typeof cb === 'function' ? cb : function () {};
      if (name === 'getBrandWCPayRequest') { getBrandWCPayRequest(params, cb); return; }
      setTimeout(function () { cb({ err_msg: name + ':fail_not_supported_by_simulator' }); }, 0);
    },
    on: function () {},
    call: function () {}
  };

  setTimeout(function () {
    window.WeixinJSBridge = bridge;
    var ev;
    try { ev = new Event('WeixinJSBridgeReady'); } catch (e) {
      ev = document.createEvent('Event');
      ev.initEvent('WeixinJSBridgeReady', true, true);
    }
    document.dispatchEvent(ev);
  }, isNaN(delay) ? 300 : delay);
})();
