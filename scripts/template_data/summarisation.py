"""summarisation: plain-English summaries of contract clauses for a small law firm's clients.

Five kinds of document (residential lease, non-disclosure agreement, freelance services agreement,
employment notice terms, software licence), each drafted from its own parameters (parties, money,
dates, notice periods, governing law) in the firm's clause style. The summary is the firm's format:
two sentences, who owes what to whom first, then how it ends or what it costs to break, with every
figure carried over exactly.
"""

from __future__ import annotations

import random

from template_data import Row, chat

SYSTEM = "You summarise legal documents for clients of Ashdown & Vale LLP: two plain-English sentences, every figure exact."
PEOPLE = ["Amira Haddad", "Owen Pritchard", "Beatrice Lowe", "Declan Murphy", "Ewa Kowalska", "Samuel Okafor",
          "Harriet Quinn", "Luca Bianchi", "Naomi Fielding", "Rajesh Nair", "Isla Campbell", "Tobias Wren"]  # fmt: skip
COMPANIES = ["Brightwater Homes Ltd", "Calder Analytics Ltd", "Northgate Foods plc", "Pennine Robotics Ltd",
             "Saltmarsh Studios Ltd", "Greyfriars Software Ltd", "Mossley Logistics Ltd", "Tamar Health Ltd"]  # fmt: skip
LAWS = ["England and Wales", "Scotland", "Northern Ireland"]
ASKS = ["Summarise this for the client.", "Give me the plain-English summary of this.",
        "Summarise this document, please.", "What does this say, in two sentences?"]  # fmt: skip


def _lease(rng: random.Random) -> tuple[str, str]:
    landlord, tenant = rng.sample(PEOPLE, 2)
    rent, months, notice = (
        rng.choice([850, 975, 1100, 1250, 1400]),
        rng.choice([6, 12, 18, 24]),
        rng.choice([1, 2]),
    )
    deposit = round(rent * 12 / 52 * 5)  # five weeks' rent, the cap in England
    flat = f"Flat {rng.randint(1, 12)}, {rng.randint(2, 90)} {rng.choice(['Mill Road', 'Park Crescent', 'Albion Street'])}"
    document = (
        f"THIS TENANCY AGREEMENT is made between {landlord} (the Landlord) and {tenant} (the Tenant). 1. The "
        f"Landlord lets {flat} to the Tenant for a fixed term of {months} months. 2. The Tenant shall pay rent of "
        f"£{rent} per calendar month in advance on the first day of each month. 3. The Tenant shall pay a deposit "
        f"of £{deposit}, to be protected in a government-approved scheme. 4. After the fixed term either party may "
        f"end this tenancy by giving not less than {notice} month(s) written notice. 5. This agreement is governed "
        f"by the law of {rng.choice(LAWS)}."
    )
    summary = (
        f"{tenant} rents {flat} from {landlord} for {months} months at £{rent} a month, with a £{deposit} deposit "
        f"held in a protection scheme. After the fixed term either side can end it with {notice} month(s) notice."
    )
    return document, summary


def _nda(rng: random.Random) -> tuple[str, str]:
    discloser, recipient = rng.sample(COMPANIES, 2)
    years, penalty = rng.choice([2, 3, 5]), rng.choice([10000, 25000, 50000])
    purpose = rng.choice(
        ["a proposed joint venture", "a possible acquisition", "a software integration project"]
    )
    document = (
        f"This Non-Disclosure Agreement is entered into by {discloser} (the Discloser) and {recipient} (the "
        f"Recipient) in connection with {purpose}. The Recipient shall keep all Confidential Information secret "
        f"and use it solely for that purpose. These obligations continue for {years} years from the date of "
        f"disclosure. Any breach entitles the Discloser to liquidated damages of £{penalty:,} without prejudice to "
        f"other remedies. Governing law: {rng.choice(LAWS)}."
    )
    summary = (
        f"{recipient} must keep {discloser}'s confidential information secret and use it only for {purpose}, "
        f"for {years} years from disclosure. A breach costs £{penalty:,} in agreed damages on top of other claims."
    )
    return document, summary


def _services(rng: random.Random) -> tuple[str, str]:
    client, freelancer = rng.choice(COMPANIES), rng.choice(PEOPLE)
    fee, days, work = (
        rng.choice([450, 500, 650, 800]),
        rng.choice([14, 30, 45]),
        rng.choice(["brand design", "data analysis", "copywriting", "web development"]),
    )
    document = (
        f"SERVICES AGREEMENT between {client} (the Client) and {freelancer} (the Contractor). The Contractor "
        f"will provide {work} services as described in Schedule 1 at a day rate of £{fee}, invoiced monthly. "
        f"Invoices are payable within {days} days of receipt. Intellectual property in the deliverables passes "
        f"to the Client on payment in full. Either party may terminate on {rng.choice([7, 14])} days written notice."
    )
    summary = (
        f"{freelancer} provides {work} to {client} at £{fee} a day, invoiced monthly and payable within {days} days. "
        f"{client} owns the work once it has paid in full, and either side can end the agreement on short notice."
    )
    return document, summary


def _employment(rng: random.Random) -> tuple[str, str]:
    employer, employee = rng.choice(COMPANIES), rng.choice(PEOPLE)
    probation, notice, weeks = rng.choice([3, 6]), rng.choice([1, 3]), rng.choice([1, 2])
    document = (
        f"Clause 14 (Termination). 14.1 During the probationary period of {probation} months, either {employer} "
        f"(the Company) or {employee} (the Employee) may terminate employment by giving {weeks} week(s) notice. "
        f"14.2 Thereafter the Employee shall give {notice} month(s) notice and the Company shall give the greater "
        f"of {notice} month(s) or the statutory minimum. 14.3 The Company may pay salary in lieu of notice."
    )
    summary = (
        f"In the first {probation} months either {employer} or {employee} can end the job with {weeks} week(s) "
        f"notice. After that {employee} gives {notice} month(s) notice, the company at least as much, and it may pay "
        f"salary instead."
    )
    return document, summary


def _licence(rng: random.Random) -> tuple[str, str]:
    vendor, customer = rng.sample(COMPANIES, 2)
    seats, fee, cap = rng.choice([10, 25, 50, 100]), rng.choice([12000, 18000, 30000]), rng.choice([1, 2])
    document = (
        f"SOFTWARE LICENCE. {vendor} (the Licensor) grants {customer} (the Licensee) a non-exclusive, "
        f"non-transferable licence for up to {seats} named users for an annual fee of £{fee:,}, payable in advance. "
        f"The licence renews automatically each year unless either party gives 90 days notice before renewal. The "
        f"Licensor's total liability is capped at {cap} times the annual fee."
    )
    summary = (
        f"{customer} may let up to {seats} named people use {vendor}'s software for £{fee:,} a year, paid upfront, "
        f"renewing automatically unless either side gives 90 days notice. {vendor}'s liability is capped at {cap} "
        f"times the yearly fee."
    )
    return document, summary


KINDS = {"lease": _lease, "nda": _nda, "services": _services, "employment": _employment, "licence": _licence}


def generate(rng: random.Random) -> list[Row]:
    rows = []
    for _ in range(28):
        for maker in KINDS.values():
            document, summary = maker(rng)
            rows.append(chat(SYSTEM, f"{rng.choice(ASKS)}\n\n{document}", summary))
    return rows
