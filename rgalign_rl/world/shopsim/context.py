"""Context features of a paper-sized ShopSim world: what a production log carries beside the few fields a need
depends on (the paper's log has 89 features).

Counts, recencies, money amounts and categorical ids of several cardinalities, drawn with realistic marginals
and correlated through one activity level per user (an active user orders, chats, views and spends more and
more recently). No rule reads them: to the need they are noise, as most of a real log's features are, and a
ranker or a reasoner has to learn to ignore them. Drawn in blocks of users and requests as compact dtypes
(int32 counts and id codes, float64 amounts), so 62 of them over 7.5M requests hold ~2 GB.
"""
from __future__ import annotations

import numpy as np

# counts over a window: name -> (mean for a user of activity 1, cap, description)
COUNTS = {
    "orders_7d": (0.6, 50, "orders placed in the last 7 days"),
    "orders_30d": (2.5, 200, "orders placed in the last 30 days"),
    "orders_90d": (7.0, 500, "orders placed in the last 90 days"),
    "chats_7d": (0.3, 50, "support chats in the last 7 days"),
    "chats_30d": (1.1, 100, "support chats in the last 30 days"),
    "refunds_90d": (0.4, 50, "refunds requested in the last 90 days"),
    "returns_90d": (0.3, 50, "returns started in the last 90 days"),
    "cancellations_90d": (0.5, 50, "orders cancelled in the last 90 days"),
    "vouchers_claimed_30d": (3.0, 200, "vouchers claimed in the last 30 days"),
    "vouchers_used_30d": (1.2, 100, "vouchers used in the last 30 days"),
    "coins_earned_30d": (120.0, 20000, "shop coins earned in the last 30 days"),
    "page_views_1d": (25.0, 2000, "pages viewed today"),
    "page_views_7d": (160.0, 10000, "pages viewed in the last 7 days"),
    "searches_1d": (4.0, 500, "searches today"),
    "searches_7d": (26.0, 2000, "searches in the last 7 days"),
    "cart_adds_7d": (3.5, 300, "items added to the cart in the last 7 days"),
    "wishlist_items": (8.0, 1000, "items on the wishlist"),
    "followed_shops": (6.0, 1000, "shops followed"),
    "reviews_written_90d": (1.0, 100, "reviews written in the last 90 days"),
    "app_opens_7d": (9.0, 300, "app opens in the last 7 days"),
    "push_clicks_7d": (1.5, 100, "push notifications opened in the last 7 days"),
    "live_stream_views_7d": (1.0, 200, "live streams watched in the last 7 days"),
    "video_views_7d": (6.0, 1000, "short videos watched in the last 7 days"),
    "game_plays_7d": (2.0, 500, "in-app games played in the last 7 days"),
    "flash_sale_views_7d": (1.8, 200, "flash sale pages viewed in the last 7 days"),
    "product_questions_30d": (0.5, 50, "questions asked on product pages in the last 30 days"),
    "seller_chats_30d": (1.3, 200, "chats with sellers in the last 30 days"),
    "addresses_saved": (1.6, 20, "delivery addresses saved"),
    "payment_methods_saved": (1.4, 10, "payment methods saved"),
    "failed_payments_30d": (0.15, 20, "failed payments in the last 30 days"),
}
# days since an event: name -> (mean days for a user of activity 1, description); capped at 365
RECENCIES = {
    "days_since_last_order": (9.0, "days since the last order"),
    "days_since_last_chat": (40.0, "days since the last support chat"),
    "days_since_last_login": (1.5, "days since the last login"),
    "days_since_last_refund": (120.0, "days since the last refund"),
    "days_since_last_return": (150.0, "days since the last return"),
    "days_since_last_voucher_use": (20.0, "days since a voucher was last used"),
    "days_since_last_review": (60.0, "days since the last review"),
    "days_since_last_promo_click": (12.0, "days since a promotion was last opened"),
    "days_since_password_change": (200.0, "days since the password was changed"),
    "days_since_address_change": (180.0, "days since an address was changed"),
}
# money and rates: name -> (kind of draw, scale, description)
AMOUNTS = {
    "avg_order_value_90d": ("lognormal", 35.0, "average order value over 90 days in dollars"),
    "total_spend_365d": ("lognormal", 600.0, "total spend over the last year in dollars"),
    "session_minutes_7d": ("lognormal", 45.0, "minutes in the app over the last 7 days"),
    "discount_share_90d": ("beta", 0.25, "share of the order value paid with discounts over 90 days"),
    "return_rate_365d": ("beta", 0.05, "share of orders returned over the last year"),
    "rating_given_avg": ("rating", 4.6, "average star rating the user gives"),
}
# categorical ids: name -> (cardinality, a stable user trait, id prefix, description); Zipf-like frequencies
IDS = {
    "city_id": (500, True, "city", "city of the default address"),
    "postcode_area": (5000, True, "pc", "postcode area of the default address"),
    "favourite_category": (300, True, "cat", "most bought product category"),
    "last_viewed_category": (300, False, "cat", "category of the last product viewed"),
    "last_order_category": (300, False, "cat", "category of the latest order's main item"),
    "last_order_shop_id": (50000, False, "shop", "shop of the latest order"),
    "device_model": (400, True, "dm", "device model"),
    "os_version": (40, True, "os", "operating system version"),
    "app_version": (60, False, "v", "app version"),
    "carrier": (30, True, "carrier", "mobile carrier"),
    "acquisition_channel": (12, True, "acq", "how the user first came to the app"),
    "browser": (8, True, "br", "browser of the web sessions"),
    "campaign_id": (200, False, "camp", "campaign of the last promotion opened"),
    "courier_id": (25, False, "courier", "courier of the latest order"),
    "warehouse_id": (80, False, "wh", "warehouse that shipped the latest order"),
    "payment_bank": (50, True, "bank", "bank of the saved card or transfer"),
}
N_CONTEXT = len(COUNTS) + len(RECENCIES) + len(AMOUNTS) + len(IDS)


def descriptions() -> dict[str, str]:
    return {**{k: v[-1] for k, v in COUNTS.items()}, **{k: v[-1] for k, v in RECENCIES.items()},
            **{k: v[-1] for k, v in AMOUNTS.items()}, **{k: v[-1] for k, v in IDS.items()}}


def id_vocabulary(name: str) -> np.ndarray:
    """The id strings of categorical feature ``name`` (code c -> ``prefix_c``)."""
    n, _, prefix, _ = IDS[name]
    return np.array([f"{prefix}_{c}" for c in range(n)])


def _zipf_codes(r: np.random.Generator, n_values: int, size: int) -> np.ndarray:
    p = np.arange(1, n_values + 1, dtype=np.float64) ** -1.1
    return r.choice(n_values, size, p=p / p.sum()).astype(np.int32)


def draw_context(r: np.random.Generator, user: np.ndarray, n_users: int, block: int = 1_000_000) -> dict[str, np.ndarray]:
    """Every context feature of the requests of ``user`` (one user index per request). Ints as int32, amounts
    as float64 rounded to cents, ids as int32 codes into :func:`id_vocabulary`."""
    n = len(user)
    activity = np.exp(r.normal(0.0, 0.7, n_users)).astype(np.float32)  # one level per user, mean ~1.28
    traits = {name: _zipf_codes(r, spec[0], n_users) for name, spec in IDS.items() if spec[1]}
    out: dict[str, np.ndarray] = {}
    for name in COUNTS:
        out[name] = np.empty(n, np.int32)
    for name in RECENCIES:
        out[name] = np.empty(n, np.int32)
    for name in AMOUNTS:  # float64: a float32 cent amount is not the decimal it was rounded to
        out[name] = np.empty(n, np.float64)
    for name in IDS:
        out[name] = np.empty(n, np.int32)
    for a in range(0, n, block):  # bounded temporaries: float64 draws of a block at a time
        u = user[a : a + block]
        act, m = activity[u], len(u)
        for name, (mean, cap, _) in COUNTS.items():
            out[name][a : a + m] = np.minimum(r.poisson(mean * act), cap)
        for name, (mean, _) in RECENCIES.items():
            out[name][a : a + m] = np.minimum(r.exponential(mean / act), 365).astype(np.int32)
        for name, (kind, scale, _) in AMOUNTS.items():
            if kind == "lognormal":
                v = scale * np.sqrt(act) * np.exp(r.normal(0.0, 0.8, m))
            elif kind == "beta":
                v = r.beta(2.0, 2.0 / scale - 2.0, m)
            else:
                v = np.clip(r.normal(scale, 0.4, m), 1.0, 5.0)
            out[name][a : a + m] = np.round(v, 2)
        for name, (card, trait, _, _) in IDS.items():
            out[name][a : a + m] = traits[name][u] if trait else _zipf_codes(r, card, m)
    return out
