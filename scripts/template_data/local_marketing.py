"""local-marketing: short promotional copy for small local businesses, written from the facts given.

Each example hands over a business's facts (name, trade, street and town, hours, phone, this week's
offer) and a channel: a Google Business Profile post, a Facebook post, an SMS to the customer list, or
a shop-window flyer. The house style is what a generic model does not know: each channel has a fixed
shape (the SMS fits in 160 characters and ends with the opt-out; the Google post ends with the town's
hashtags), every fact is used and nothing is invented.
"""

from __future__ import annotations

import random

from template_data import Row, chat

SYSTEM = "You write local marketing copy for small businesses. Use only the facts given, in the channel's house format."

# name, trade, street, town, hours, phone
BUSINESSES = [
    ("Hollybush Bakery", "bakery", "14 Market Street", "Ludlow", "7am-4pm", "01584 555 210"),
    ("Spokes & Sprockets", "bike repair shop", "3 Bridge Lane", "Kendal", "9am-6pm", "01539 555 118"),
    ("Still Point Yoga", "yoga studio", "27 Castle Hill", "Totnes", "6:30am-9pm", "01803 555 402"),
    ("Petal & Stem", "florist", "8 Church Walk", "Frome", "8:30am-5:30pm", "01373 555 977"),
    ("Harbour Hardware", "hardware store", "51 Quay Road", "Whitby", "8am-5pm", "01947 555 630"),
    ("Forno Rosso", "pizzeria", "2 Albert Terrace", "Harrogate", "5pm-10pm", "01423 555 284"),
    ("Sharp & Co Barbers", "barber", "19 High Street", "Hebden Bridge", "9am-7pm", "01422 555 051"),
    ("The Folded Page", "bookshop", "6 Fore Street", "Hexham", "10am-5pm", "01434 555 733"),
    ("Muddy Paws Grooming", "dog groomer", "Unit 4, Mill Yard", "Malton", "8am-4pm", "01653 555 319"),
    ("Bright Smile Dental", "dental practice", "40 Station Road", "Ilkley", "8am-6pm", "01943 555 866"),
    ("Ironside Gym", "gym", "12 Canal Wharf", "Stroud", "6am-10pm", "01453 555 147"),
    ("Polished Nail Bar", "nail salon", "33 Bank Street", "Keswick", "10am-6pm", "01768 555 590"),
    ("Greenway Garden Centre", "garden centre", "Station Approach", "Ledbury", "9am-5pm", "01531 555 712"),
    ("Clear View Opticians", "optician", "9 Sheep Street", "Skipton", "9am-5:30pm", "01756 555 264"),
    ("Oak & Olive Deli", "deli", "22 Silver Street", "Wells", "8am-6pm", "01749 555 803"),
    ("Scoops", "ice cream parlour", "1 Promenade", "Saltburn", "11am-8pm", "01287 555 436"),
    ("Keynote Music School", "music school", "15 Union Street", "Bath", "3pm-8pm", "01225 555 961"),
    ("Sparkle Car Wash", "hand car wash", "Riverside Trading Estate", "Bideford", "8am-6pm", "01237 555 380"),
    ("Inkwell Print Shop", "print shop", "5 Guildhall Lane", "Leicester", "9am-5pm", "0116 555 7721"),
    ("The Threadbare Tailor", "tailor", "44 Northgate", "Chester", "9:30am-5pm", "01244 555 092"),
    ("Copper Kettle Cafe", "cafe", "17 The Square", "Richmond", "8am-5pm", "01748 555 645"),
    ("Fixit Plumbing", "plumber", "9 Lowther Street", "Penrith", "7am-7pm", "01768 555 233"),
    ("Wagtail Pet Supplies", "pet shop", "28 Victoria Road", "Darlington", "9am-6pm", "01325 555 417"),
    ("Sudsy's Laundrette", "laundrette", "61 King Street", "Lancaster", "7am-9pm", "01524 555 188"),
    ("The Rolling Pin", "cookery school", "Old Chapel, Mill Lane", "Ludlow", "by booking", "01584 555 944"),
    (
        "Northern Lights Electrical",
        "electrician",
        "Unit 2, Shap Road Estate",
        "Kendal",
        "8am-6pm",
        "01539 555 725",
    ),
]

# what, when
OFFERS = {
    "bakery": [
        ("buy two sourdough loaves, get a third free", "this Saturday only"),
        ("our new cardamom knots are in the window", "from Tuesday"),
        ("a free coffee with any slice of cake", "every weekday before 9am"),
    ],
    "bike repair shop": [
        ("a full spring service for £45", "all of April"),
        ("free safety checks for kids' bikes", "this half term"),
        ("puncture repairs while you wait", "every Saturday morning"),
    ],
    "yoga studio": [
        ("your first class free", "all this month"),
        ("a new beginners' course, six Monday evenings", "starting 3 March"),
        ("sunrise flow on the terrace", "every Sunday at 7am"),
    ],
    "florist": [
        ("Mother's Day bouquets from £25, order ahead", "until Friday"),
        ("10% off wedding flowers booked this month", "until the 30th"),
        ("a bunch of seasonal tulips for £12", "while they last"),
    ],
    "hardware store": [
        ("20% off all garden tools", "this weekend"),
        ("free key cutting with any lock", "all week"),
        ("paint mixed to any colour in five minutes", "every day"),
    ],
    "pizzeria": [
        ("two pizzas and a bottle of wine for £30", "Tuesdays and Wednesdays"),
        ("kids eat free with every adult main", "this half term"),
        ("our new 'nduja and honey pizza", "from this Friday"),
    ],
    "barber": [
        ("walk-in cuts with no booking needed", "every weekday until 2pm"),
        ("£5 off a cut and beard trim", "all of November"),
        ("student cuts for £12", "every Thursday"),
    ],
    "bookshop": [
        ("a signed-copy evening with a local author", "Thursday at 7pm"),
        ("buy any three paperbacks for £20", "this week"),
        ("story time for under-fives", "every Saturday at 10:30am"),
    ],
    "dog groomer": [
        ("a puppy's first groom for £20", "this month"),
        ("a free nail trim with every full groom", "until Sunday"),
        ("same-day bath and brush slots", "Mondays and Fridays"),
    ],
    "dental practice": [
        ("new patients welcome, no waiting list", "from this week"),
        ("free whitening consultations", "all of June"),
        ("Saturday morning appointments", "from 1 September"),
    ],
    "gym": [
        ("no joining fee", "until the end of January"),
        ("a free week's pass for a friend", "this month"),
        ("a new spin class with live music", "every Wednesday at 6pm"),
    ],
    "nail salon": [
        ("a gel manicure and pedicure for £45", "this week only"),
        ("bridal party packages", "booking now for the summer"),
        ("10% off for first-time customers", "all month"),
    ],
    "garden centre": [
        ("three perennials for £15", "this weekend"),
        ("a free potting workshop for families", "Saturday at 11am"),
        ("Christmas trees, delivered free locally", "from 1 December"),
    ],
    "optician": [
        ("free eye tests for over-60s and under-16s", "every day"),
        ("20% off designer frames", "until the end of the month"),
        ("contact lens trials at no charge", "this month"),
    ],
    "deli": [
        ("a new cheese board box for two, £18", "for the weekend"),
        ("free tastings of local olive oils", "Saturday from 11am"),
        ("Christmas hampers made to order", "order by 15 December"),
    ],
    "ice cream parlour": [
        ("double scoop for the price of one", "every day after 6pm"),
        ("a new salted honey flavour", "from this weekend"),
        ("10% off tubs to take home", "all of August"),
    ],
    "music school": [
        ("a free trial lesson on any instrument", "this month"),
        ("summer rock band camp for ages 10-16", "booking now for July"),
        ("adult beginner piano groups", "Tuesday evenings"),
    ],
    "hand car wash": [
        ("a full valet for £35", "this week"),
        ("every sixth wash free with a loyalty card", "from today"),
        ("free tyre pressure checks", "every Saturday"),
    ],
    "print shop": [
        ("500 business cards for £29", "this month"),
        ("same-day poster printing", "orders in by noon"),
        ("10% off wedding stationery", "until 31 March"),
    ],
    "tailor": [
        ("trouser hemming from £10, ready in two days", "every day"),
        ("wedding suit alterations", "booking now for the season"),
        ("a free repair on any jacket we made", "always"),
    ],
    "cafe": [
        ("a new breakfast menu", "from Monday"),
        ("any hot drink and a scone for £4.50", "weekday afternoons"),
        ("live acoustic music", "Friday evenings from 6pm"),
    ],
    "plumber": [
        ("boiler services for £65", "booking now before winter"),
        ("no call-out charge", "within the town, all month"),
        ("emergency leak repairs", "seven days a week"),
    ],
    "pet shop": [
        ("15% off all cat food", "this weekend"),
        ("a free name tag engraved with any collar", "all week"),
        ("a puppy-care talk", "Saturday at 2pm"),
    ],
    "laundrette": [
        ("a free dry with every wash", "Tuesday mornings"),
        ("duvet washing for £15", "every day"),
        ("service washes ready the same day", "drop off before 10am"),
    ],
    "cookery school": [
        ("a pasta-making evening for two, £80", "Friday 14 March"),
        ("kids' baking mornings", "every Saturday this half term"),
        ("gift vouchers for any class", "available now"),
    ],
    "electrician": [
        ("free quotes for EV charger installs", "this month"),
        ("safety checks for landlords from £90", "booking now"),
        ("same-day call-outs", "weekdays before 2pm"),
    ],
}

CHANNELS = ["google", "facebook", "sms", "flyer"]


def _facts(business: tuple[str, ...], offer: tuple[str, str]) -> str:
    name, trade, street, town, hours, phone = business
    return (
        f"Business: {name} ({trade}), {street}, {town}\nOffer: {offer[0]}\nWhen: {offer[1]}\n"
        f"Hours: {hours}\nPhone: {phone}"
    )


def _asks(channel: str) -> list[str]:
    return {
        "google": ["Write a Google Business Profile post.", "Draft our Google post for this week.",
                   "We need a post for our Google Business listing."],
        "facebook": ["Write a Facebook post for our page.", "Draft a friendly Facebook update.",
                     "Can you write this week's Facebook post?"],
        "sms": ["Write a text message for our customer list.", "Draft an SMS to our regulars.",
                "We want to text our customers about this."],
        "flyer": ["Write the copy for a shop-window flyer.", "Draft a flyer: headline and a few lines.",
                  "Write a poster for our window."],
    }[channel]  # fmt: skip


def _copy(rng: random.Random, channel: str, business: tuple[str, ...], offer: tuple[str, str]) -> str:
    name, trade, street, town, hours, phone = business
    what, when = offer
    tag = town.replace(" ", "")
    if channel == "google":
        opener = rng.choice([f"New at {name}", f"This week at {name}", f"Good news from {name}"])
        return (
            f"{opener}: {what}, {when}. Find us at {street}, {town}, open {hours}. "
            f"Call {phone} or just drop in. #{tag} #ShopLocal"
        )
    if channel == "facebook":
        greeting = rng.choice([f"Hello {town}!", f"Morning, {town}!", f"Calling all {town} neighbours!"])
        return (
            f"{greeting} {what[0].upper() + what[1:]}, {when}, here at {name}. "
            f"{rng.choice(['Tell a friend', 'Bring a friend', 'Spread the word'])} and come and see us at {street} "
            f"({hours}). Questions? Ring {phone}."
        )
    if channel == "sms":
        return f"{name}: {what}, {when}. {street}, {town}. Reply STOP to opt out"
    headline = what.split(",")[0].upper()
    return f"{headline}\n{when[0].upper() + when[1:]} at {name}, {street}, {town}.\nOpen {hours} | {phone}"


def generate(rng: random.Random) -> list[Row]:
    rows = []
    for business in BUSINESSES:
        for offer in OFFERS[business[1]]:
            for channel in rng.sample(CHANNELS, 2):
                user = f"{rng.choice(_asks(channel))}\n\n{_facts(business, offer)}"
                # `business` keeps every post of one business in one split (prepare.group_by)
                rows.append(
                    {**chat(SYSTEM, user, _copy(rng, channel, business, offer)), "business": business[0]}
                )
    return rows
