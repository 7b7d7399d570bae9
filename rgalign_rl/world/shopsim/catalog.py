"""ShopSim's knowledge base and hidden rules, as data a person can read and edit.

Each intent line is ``topic | intent text | need phrase | rule``. The rule is the feature interaction
that makes a user *need* that intent; when several rules hold, the most specific one (most conditions,
then the earliest line) is the need. The need phrase is the canonical text of that need: what a
perfect reasoner would write.
"""
from __future__ import annotations

# name -> (kind, values or (low, high), whether it is a stable user trait, description)
FEATURES: dict[str, tuple] = {
    "order_status": ("cat", ["none", "to_pay", "to_ship", "to_receive", "completed", "cancelled"], False,
                     "status of the user's latest order"),
    "days_in_status": ("int", (0, 30), False, "days the latest order has been in its status"),
    "logistics_event": ("cat", ["none", "in_transit", "delayed", "out_for_delivery", "failed_delivery",
                                "delivered", "lost"], False, "latest courier event of the order"),
    "payment_method": ("cat", ["cod", "card", "wallet", "bank_transfer", "paylater"], False,
                       "payment method of the latest order"),
    "payment_state": ("cat", ["none", "pending", "failed", "success", "double_charged"], False,
                      "state of the latest payment"),
    "refund_state": ("cat", ["none", "requested", "processing", "approved", "rejected", "completed"], False,
                     "state of the user's refund, if any"),
    "return_state": ("cat", ["none", "requested", "pickup_scheduled", "shipped_back", "received", "disputed"],
                     False, "state of the user's return, if any"),
    "voucher_state": ("cat", ["none", "active", "expired", "not_applicable", "used"], False,
                      "state of the user's best voucher"),
    "voucher_expiry_days": ("int", (0, 30), False, "days until the user's voucher expires"),
    "cancel_request": ("cat", ["none", "pending", "rejected", "approved"], False, "state of a cancellation request"),
    "paylater_state": ("cat", ["none", "active", "due", "overdue", "limit_reached"], False,
                       "state of the user's PayLater credit"),
    "last_chat_topic": ("cat", ["none", "logistics", "returns", "refunds", "payment", "vouchers", "account",
                                "seller", "cancellation", "paylater", "wallet", "promotions", "app",
                                "membership"], False, "topic of the user's previous chat"),
    "cart_items": ("int", (0, 20), False, "items in the shopping cart"),
    "items_in_order": ("int", (1, 10), False, "items in the latest order"),
    "order_value": ("float", (1.0, 1000.0), False, "value of the latest order in dollars"),
    "wallet_balance": ("float", (0.0, 2000.0), False, "wallet balance in dollars"),
    "coins_balance": ("int", (0, 5000), False, "shop coins held"),
    "login_failures_7d": ("int", (0, 10), False, "failed logins in the last 7 days"),
    "hour_of_day": ("int", (0, 23), False, "local hour when the chat opened"),
    "address_changed": ("bool", None, False, "the user changed an address in the last day"),
    "flash_sale_active": ("bool", None, False, "a flash sale is running"),
    "app_outdated": ("bool", None, False, "the app version is outdated"),
    "membership": ("cat", ["none", "silver", "gold", "platinum"], True, "membership tier"),
    "region": ("cat", ["north", "south", "east", "west", "central", "metro", "island", "border"], True,
               "delivery region"),
    "device": ("cat", ["android", "ios", "web"], True, "device used"),
    "language": ("cat", ["en", "ms", "id", "th", "vi", "zh"], True, "app language"),
    "is_seller": ("bool", None, True, "the user also runs a shop"),
    "account_age_days": ("int", (0, 3000), True, "age of the account in days"),
}

# Share of background draws that are "none" for state features, so that rules fire mostly by design.
NONE_SHARE = 0.8

TOPIC_ACTIONS: dict[str, list[str]] = {
    "logistics": ["track_parcel", "view_shipping"], "returns": ["open_return", "view_return_policy"],
    "refunds": ["view_refund", "open_wallet_history"], "payment": ["retry_payment", "view_payment"],
    "vouchers": ["open_vouchers", "apply_voucher"], "account": ["open_settings", "edit_profile"],
    "seller": ["open_seller_centre", "chat_seller"], "cancellation": ["open_cancel", "view_order"],
    "paylater": ["open_paylater", "view_bill"], "wallet": ["open_wallet", "view_coins"],
    "promotions": ["open_flash_sale", "view_deals"], "app": ["open_help", "restart_app"],
    "membership": ["open_membership", "view_tier"],
}
TOPIC_NOUNS: dict[str, str] = {
    "logistics": "my delivery", "returns": "a return", "refunds": "my refund", "payment": "a payment",
    "vouchers": "a voucher", "account": "my account", "seller": "a seller", "cancellation": "my order",
    "paylater": "PayLater", "wallet": "my wallet", "promotions": "a promotion", "app": "the app",
    "membership": "my membership",
}
# Word swaps teachers use to vary their wording.
SYNONYMS: dict[str, list[str]] = {
    "parcel": ["package", "order", "shipment"], "my": ["the"], "refund": ["money back", "reimbursement"],
    "cancel": ["call off", "stop"], "voucher": ["coupon", "promo code"], "account": ["profile"],
    "seller": ["shop", "merchant"], "delivery": ["shipping"], "app": ["application"],
    "wallet": ["e-wallet"], "bill": ["statement"], "check": ["see", "find out"], "get": ["receive"],
    "item": ["product"], "money": ["funds"], "fix": ["solve"], "change": ["update", "edit"],
}

INTENTS = """
logistics | Track my parcel | track where my parcel is now | order_status=to_receive & logistics_event=in_transit
logistics | Speed up my parcel delivery | my delayed parcel must arrive faster | order_status=to_receive & logistics_event=delayed & days_in_status>=7
logistics | Why is my parcel delayed | find out why my parcel is late | order_status=to_receive & logistics_event=delayed & days_in_status<7
logistics | Report a lost parcel | my parcel got lost during delivery | logistics_event=lost
logistics | Reschedule a failed delivery | redeliver after a failed delivery attempt | logistics_event=failed_delivery
logistics | Change my delivery address | change the delivery address of my order | address_changed=true & order_status=to_ship
logistics | Parcel marked delivered but not received | parcel says delivered but never arrived | logistics_event=delivered & order_status=to_receive
logistics | Contact the courier | call the courier delivering my parcel tonight | logistics_event=out_for_delivery & hour_of_day>=18
logistics | When will my order be shipped | the seller has not shipped my order yet | order_status=to_ship & days_in_status>=3
logistics | Delivery to island areas | delivery options for my island address | region=island & order_status=to_ship & days_in_status<3
returns | Return an item | start a return for my item | order_status=completed & days_in_status<7 & return_state=none
returns | Return window has passed | return an item after the return window closed | order_status=completed & days_in_status>=15 & last_chat_topic=returns
returns | Schedule a return pickup | book a courier pickup for my return | return_state=requested & days_in_status>=2
returns | Check my return request | check the status of my return request | return_state=requested & days_in_status<2
returns | Return pickup did not come | the courier missed my return pickup | return_state=pickup_scheduled & days_in_status>=3
returns | Drop off a return at a counter | drop off my return parcel at a counter | return_state=pickup_scheduled & region=border
returns | Track my returned item | track my returned parcel back to the seller | return_state=shipped_back
returns | Seller received my return | the seller got my returned item, what next | return_state=received & refund_state=none
returns | Dispute a rejected return | appeal the seller rejecting my return | return_state=disputed
returns | Return a damaged item | return an item that arrived damaged | order_status=completed & days_in_status<3 & last_chat_topic=logistics
refunds | Check my refund status | check where my refund is | refund_state=processing & days_in_status<7
refunds | My refund is taking too long | my refund is overdue and still not paid | refund_state=processing & days_in_status>=7
refunds | Refund approved but not in my bank | approved refund missing from my bank account | refund_state=approved & payment_method=bank_transfer
refunds | Refund to my wallet | refund paid into my wallet balance | refund_state=approved & payment_method=wallet
refunds | Refund to my card | when the refund reaches my credit card | refund_state=approved & payment_method=card
refunds | Refund request rejected | why my refund request was rejected | refund_state=rejected
refunds | Refund for a cancelled order | get money back for my cancelled order | order_status=cancelled & payment_state=success
refunds | Refund the shipping fee | get the shipping fee refunded | refund_state=completed & order_value<15
refunds | Partial refund for some items | refund only some items of my order | refund_state=requested & items_in_order>=3
refunds | Refund for a cash on delivery order | refund for an order paid cash on delivery | refund_state=requested & payment_method=cod
payment | Card payment failed | my card payment did not go through | payment_state=failed & payment_method=card
payment | I was charged twice | I was charged twice for one order | payment_state=double_charged
payment | Payment still pending | my payment is still pending | payment_state=pending & days_in_status<2
payment | Bank transfer not confirmed | my bank transfer is not confirmed yet | payment_state=pending & payment_method=bank_transfer & days_in_status>=2
payment | Change my payment method | switch the payment method of my order | order_status=to_pay & payment_state=none
payment | Cash on delivery not available | why I cannot pay cash on delivery | payment_method=cod & order_value>=200
payment | Online banking payment failed | my online banking payment failed | payment_state=failed & payment_method=bank_transfer
payment | Pay in card installments | pay for a big order in card installments | payment_method=card & order_value>=300
payment | Wallet payment failed | paying with my wallet failed | payment_state=failed & payment_method=wallet
payment | Get a tax invoice | get a tax invoice for my purchase | order_status=completed & order_value>=500
vouchers | Voucher cannot be applied | my voucher cannot be used at checkout | voucher_state=not_applicable
vouchers | Voucher expiring soon | use my voucher before it expires | voucher_state=active & voucher_expiry_days<=2
vouchers | My voucher has expired | my voucher expired before I used it | voucher_state=expired
vouchers | Claim a free shipping voucher | claim a free shipping voucher for my cart | voucher_state=none & cart_items>=3 & order_status=none
vouchers | Promised voucher not received | I never got the voucher I was promised | voucher_state=none & last_chat_topic=promotions
vouchers | Voucher back after cancelling | get my voucher back after cancelling an order | voucher_state=used & order_status=cancelled
vouchers | Combine shop and platform vouchers | use several vouchers on one order | voucher_state=active & cart_items>=5
vouchers | Voucher minimum spend | reach the minimum spend of my voucher | voucher_state=active & order_value<20
vouchers | Birthday voucher | where is my birthday voucher | voucher_state=none & membership=gold & last_chat_topic=membership
vouchers | Coins cashback voucher | coins cashback voucher terms | voucher_state=active & coins_balance>=2500
account | Reset my password | reset my account password | login_failures_7d>=3
account | My account is locked | unlock my locked account | login_failures_7d>=6 & device=web
account | Change my phone number | update the phone number on my account | last_chat_topic=account & device=android
account | Verify my identity | complete identity verification | account_age_days<7 & payment_method=paylater
account | Delete my account | permanently delete my account | account_age_days>=1000 & last_chat_topic=account & order_status=none
account | Suspicious login alert | someone else logged in to my account | login_failures_7d>=3 & device=ios & hour_of_day<6
account | Edit my saved addresses | edit the addresses saved in my account | address_changed=true & order_status=none
account | Link a social media account | link my social media account | account_age_days<30 & device=ios
account | Did not get the OTP code | the OTP code never arrived | login_failures_7d>=1 & app_outdated=true
account | Change the app language | switch the app to another language | language=zh & account_age_days<30
seller | Seller: arrange shipment | arrange shipment for my shop's orders | is_seller=true & order_status=to_ship
seller | Seller: withdraw shop income | withdraw the income of my shop | is_seller=true & payment_state=success
seller | Seller: respond to a return request | handle a buyer's return request as a seller | is_seller=true & return_state=requested
seller | Seller: penalty points | why my shop received penalty points | is_seller=true & days_in_status>=10
seller | Seller: list a new product | add a new product to my shop | is_seller=true & order_status=none
seller | Seller: join a campaign | join a shop promotion campaign | is_seller=true & flash_sale_active=true
seller | Report a seller | report a suspicious seller | is_seller=false & refund_state=rejected & last_chat_topic=seller
seller | Seller is not responding | the seller is not replying to my messages | last_chat_topic=seller & order_status=to_ship
seller | Seller: improve shop rating | improve the rating of my shop | is_seller=true & membership=platinum
seller | Seller: cancel a buyer's order | cancel a buyer's order as a seller | is_seller=true & cancel_request=pending
cancellation | Cancel my order | cancel my order before it ships | order_status=to_ship & cancel_request=none & days_in_status<1
cancellation | Cancel an unpaid order | cancel an order I have not paid for | order_status=to_pay & days_in_status>=2
cancellation | Cancellation request pending | my cancellation request is still pending | cancel_request=pending
cancellation | Seller rejected my cancellation | the seller rejected my cancellation | cancel_request=rejected
cancellation | Order cancelled automatically | why my order was cancelled automatically | order_status=cancelled & payment_state=none
cancellation | Cancel after shipping | cancel an order that already shipped | order_status=to_receive & cancel_request=rejected
cancellation | Buy a cancelled item again | reorder an item from a cancelled order | order_status=cancelled & flash_sale_active=true
cancellation | Cancel a flash sale order | cancel an item bought in a flash sale | flash_sale_active=true & order_status=to_ship
cancellation | Cancel one item of my order | cancel one item of a multi item order | order_status=to_ship & items_in_order>=4
cancellation | Cancellation approved, what next | my cancellation was approved, what happens now | cancel_request=approved
paylater | Pay my PayLater bill | pay my PayLater bill that is due | paylater_state=due
paylater | PayLater late fees | late fees on my overdue PayLater bill | paylater_state=overdue
paylater | Increase my PayLater limit | raise my PayLater credit limit | paylater_state=limit_reached
paylater | Activate PayLater | activate PayLater on my account | paylater_state=none & payment_method=paylater
paylater | PayLater installment plan | split my PayLater bill into installments | paylater_state=due & order_value>=300
paylater | Refund of a PayLater purchase | refund for an item bought with PayLater | paylater_state=active & refund_state=approved
paylater | PayLater repayment failed | my PayLater repayment failed | paylater_state=overdue & payment_state=failed
paylater | Close my PayLater account | close my PayLater account | paylater_state=active & account_age_days>=1000
paylater | PayLater not available | why I cannot use PayLater yet | paylater_state=none & account_age_days<30 & payment_method=paylater
paylater | View my PayLater statement | view my PayLater statement | paylater_state=active & last_chat_topic=paylater
wallet | Top up my wallet | add money to my wallet | wallet_balance<5 & payment_method=wallet
wallet | Withdraw my wallet balance | withdraw money from my wallet to my bank | wallet_balance>=1500
wallet | Money missing from my wallet | money is missing from my wallet | wallet_balance<5 & refund_state=completed
wallet | Use coins for a discount | use my coins to get a discount | coins_balance>=1000 & order_status=to_pay
wallet | My coins are expiring | my coins are about to expire | coins_balance>=4000 & days_in_status>=20
wallet | Coins not credited | coins from my order were not credited | order_status=completed & coins_balance<50 & membership!=none
wallet | Send money to a friend | send money from my wallet to a friend | wallet_balance>=1000 & order_status=none
wallet | Verify my wallet | verify my wallet to unlock higher limits | wallet_balance>=1000 & account_age_days<30
wallet | Reset my wallet PIN | reset the PIN of my wallet | payment_state=failed & payment_method=wallet & login_failures_7d>=1
wallet | How to earn coins | how to earn more coins | coins_balance<50 & order_status=none
promotions | Next flash sale times | when the next flash sale starts | flash_sale_active=false & cart_items>=12
promotions | Flash sale item sold out | the flash sale item sold out too fast | flash_sale_active=true & order_status=none
promotions | Price changed in my cart | the price in my cart changed | cart_items>=10 & flash_sale_active=true
promotions | Free gift missing from my parcel | the free gift was missing from my parcel | order_status=completed & order_value>=100 & last_chat_topic=promotions
promotions | Lowest price guarantee claim | claim the lowest price guarantee | order_status=completed & days_in_status<2 & last_chat_topic=promotions
promotions | How bundle deals work | how bundle deals work | cart_items>=5 & order_status=none
promotions | Live stream deals | discounts from live streams | device=ios & hour_of_day>=20 & order_status=none
promotions | Daily check-in rewards | claim my daily check-in rewards | order_status=none & hour_of_day<8
promotions | Invite friends for rewards | invite friends to earn referral rewards | account_age_days<7 & order_status=none
promotions | Claim my game prize | claim the prize I won in a game | device=android & hour_of_day>=22
app | App keeps crashing | the app keeps crashing | app_outdated=true & device=android
app | Update the app | update the app to the latest version | app_outdated=true & device=ios
app | Cannot upload photos | photos fail to upload in chat | device=web & last_chat_topic=app
app | Notifications not working | I am not getting notifications | device=ios & app_outdated=false & last_chat_topic=app
app | Website not loading | the website does not load | device=web & app_outdated=true
app | Error on the checkout page | the checkout page shows an error | cart_items>=1 & payment_state=failed & device=web
app | Search results look wrong | search results look wrong | last_chat_topic=app & device=android
app | Report a bug | report a bug in the app | app_outdated=false & last_chat_topic=app & login_failures_7d>=1
app | The app is slow | the app is slow and laggy | device=android & account_age_days>=1000 & app_outdated=true
app | Shop from another region | shop from a store in another region | language=en & region=border
membership | My membership benefits | what benefits my membership tier gives | membership=silver & order_status=none
membership | Reach the next tier | how to reach the next membership tier | membership=gold & cart_items>=5
membership | Why my tier was downgraded | why my membership tier was downgraded | membership=silver & account_age_days>=1000
membership | Member free shipping not applied | my member free shipping was not applied | membership=platinum & order_status=to_pay
membership | Join the membership program | sign up for the membership program | membership=none & account_age_days>=365 & order_status=none
membership | Member exclusive voucher | claim my member exclusive voucher | membership=platinum & voucher_state=none
membership | Membership points expiring | my membership points are expiring | membership=gold & days_in_status>=25
membership | Priority support for members | talk to priority member support | membership=platinum & last_chat_topic!=none
membership | Renew my membership | renew my membership | membership=gold & account_age_days<100
membership | Cancel my membership | cancel my membership subscription | membership!=none & last_chat_topic=membership
"""


def parse_intents() -> list[dict]:
    rows = []
    for n, line in enumerate(l for l in INTENTS.strip().splitlines() if l.strip()):
        topic, text, need, rule = (part.strip() for part in line.split("|"))
        rows.append({"intent_id": f"I{n:03d}", "topic": topic, "text": text, "need": need,
                     "rule": [parse_condition(c) for c in rule.split("&")]})
    return rows


def parse_condition(text: str) -> tuple[str, str, object]:
    for op in (">=", "<=", "!=", "=", "<", ">"):
        if op in text:
            name, value = (t.strip() for t in text.split(op, 1))
            break
    else:
        raise ValueError(f"bad rule condition {text!r}")
    kind, spec = FEATURES[name][0], FEATURES[name][1]
    if kind == "bool":
        value = value == "true"
    elif kind in ("int", "float"):
        value = float(value)
    elif value not in spec:
        raise ValueError(f"rule condition {text!r}: {value!r} is not a value of {name}")
    return name, op, value
