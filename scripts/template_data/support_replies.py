"""support-replies: answers to customer emails for Ledgerly, a made-up invoicing app.

Customers write about ten recurring issues in their own words and moods. A good reply uses the
customer's name, acknowledges the mood in one line, gives Ledgerly's actual steps and policy (where a
setting is, how long a refund takes: facts a generic model cannot know), and signs off as the team
does. Some conversations have a follow-up turn.
"""

from __future__ import annotations

import random

from template_data import Row

SYSTEM = "You are Ledgerly's support team. Reply to the customer using Ledgerly's policies."
SIGN_OFF = "Best, Sam at Ledgerly Support"
NAMES = ["Priya", "Marcus", "Elena", "Jonah", "Fatima", "Dylan", "Sofia", "Kwame", "Hannah", "Ravi", "Chloe",
         "Mateus", "Aoife", "Ben", "Yusuf", "Ingrid", "Tariq", "Lucy", "Oskar", "Mei"]  # fmt: skip
MOODS = {
    "calm": ("", "thanks for getting in touch."),
    "rushed": (" I need this sorted today.", "I know you're short on time, so here's the quickest route."),
    "annoyed": (" Honestly this is really frustrating.", "I'm sorry this has been frustrating."),
}

# issue: (ways customers put it, what Ledgerly's reply says)
ISSUES = {
    "password": (
        [
            "I can't log in, the password reset email never arrives.",
            "Locked out of my account, reset link isn't coming.",
            "How do I reset my password? The email doesn't show up.",
        ],
        "Reset links come from no-reply@ledgerly.example and last 30 minutes, so please check your spam folder and "
        "request a fresh one from the login page. If it still hasn't arrived after 10 minutes, reply here and "
        "I'll reset it by hand.",
    ),
    "refund": (
        [
            "I was charged for the annual plan but I meant to cancel. Can I get a refund?",
            "My plan renewed yesterday and I don't want it. Refund please?",
            "Can I get my money back for this year's renewal?",
        ],
        "Renewals can be refunded in full within 14 days. I've started yours now; it takes 5-7 working days to "
        "reach your card, and your account stays on the free plan meanwhile.",
    ),
    "export": (
        [
            "How do I export all my invoices for my accountant?",
            "My accountant wants a CSV of everything. Where is that?",
            "Is there a way to download all invoices at once?",
        ],
        "Go to Settings > Data > Export and choose CSV (or PDF bundle). The export covers every invoice and "
        "payment, and the link arrives by email within a few minutes.",
    ),
    "reminders": (
        [
            "Clients keep paying late. Can Ledgerly chase them for me?",
            "Is there an automatic reminder for unpaid invoices?",
            "How do I set up payment reminders?",
        ],
        "Open Invoices > Reminders and switch on automatic reminders. You can send up to three: we suggest 3 days "
        "before the due date, on the day, and 7 days after. Each one links straight to the payment page.",
    ),
    "bank": (
        [
            "My bank feed stopped updating last week.",
            "Transactions aren't coming through from my bank anymore.",
            "The bank connection says expired. What do I do?",
        ],
        "Bank connections need re-authorising every 90 days under UK open banking rules. Go to Banking > "
        "Connections, click Reconnect next to your bank and log in once; missing transactions then sync within "
        "an hour.",
    ),
    "vat": (
        [
            "How do I add VAT to my invoices?",
            "I just registered for VAT. How do I change my invoices?",
            "Where do I put my VAT number?",
        ],
        "Add your VAT number under Settings > Tax, then set the default rate (20% standard). New invoices pick it "
        "up automatically; existing drafts can be updated with Apply to drafts on the same page.",
    ),
    "teammate": (
        [
            "Can my bookkeeper get her own login?",
            "How do I add a colleague to our account?",
            "I want to give my partner access to invoices.",
        ],
        "On the Team plan you can invite up to 5 people from Settings > Team > Invite. Each person gets their "
        "own login, and you choose whether they can send invoices or only view them.",
    ),
    "cancel": (
        [
            "Please cancel my subscription.",
            "How do I close my Ledgerly account?",
            "I'd like to stop paying for Ledgerly.",
        ],
        "You can cancel any time under Settings > Billing > Cancel plan. You keep full access until the end of "
        "the billing period, and we keep your data for 60 days in case you change your mind.",
    ),
    "duplicate": (
        [
            "I've been charged twice this month!",
            "There are two Ledgerly payments on my card statement.",
            "Why did you take my subscription twice?",
        ],
        "I can see the duplicate charge and have refunded the second payment just now. It takes 5-7 working days "
        "to appear on your statement, and I've added a note so it can't happen on your next renewal.",
    ),
    "currency": (
        [
            "Can I invoice a client in euros?",
            "I have a US client. Can I bill in dollars?",
            "How do I change the currency on one invoice?",
        ],
        "Yes: when you create the invoice, pick the currency from the drop-down next to the total. Ledgerly "
        "supports 30 currencies and shows the sterling value on your reports at that day's rate.",
    ),
}
FOLLOW_UPS = [
    "Thanks! One more thing: is this the same on the mobile app?",
    "Great, and will my clients see any change?",
]
FOLLOW_UP_REPLIES = [
    "Yes, the mobile app has the same menus, under the profile icon at the top right.",
    "No, your clients won't see anything different unless you change what's on their invoices.",
]


def generate(rng: random.Random) -> list[Row]:
    rows = []
    for issue, (asks, facts) in ISSUES.items():
        for ask in asks:
            for mood, (suffix, empathy) in MOODS.items():
                for name in rng.sample(NAMES, 3 if mood == "calm" else 1):
                    greeting = rng.choice(["Hi,", "Hello,", "Hey there,", ""])
                    email = f"{greeting} {ask}{suffix} {rng.choice(['Thanks', 'Cheers', 'Regards'])}, {name}".strip()
                    reply = f"Hi {name}, {empathy} {facts} {SIGN_OFF}"
                    messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": email},
                                {"role": "assistant", "content": reply}]  # fmt: skip
                    if rng.random() < 0.15:
                        turn = rng.randrange(len(FOLLOW_UPS))
                        messages += [{"role": "user", "content": FOLLOW_UPS[turn]},
                                     {"role": "assistant", "content": f"{FOLLOW_UP_REPLIES[turn]} {SIGN_OFF}"}]  # fmt: skip
                    rows.append({"messages": messages, "issue": issue})
    return rows
