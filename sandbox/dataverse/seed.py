"""Seed data for demos and load tests: salespeople (some disabled or unlicensed), currencies, unit groups,
accounts with contacts, active products. Seeding is "data that was already there": it fires no webhooks."""

from __future__ import annotations

import random
from typing import Any

from sandbox.dataverse import identity
from sandbox.dataverse.engine import Organization
from sandbox.dataverse.values import EntityRef

FIRST = ["Ana", "Ben", "Chloe", "Dev", "Elif", "Femi", "Greta", "Hugo", "Ines", "Jun", "Kai", "Lena", "Mads",
         "Nora", "Omar", "Pia", "Quinn", "Rosa", "Sven", "Tara"]
LAST = ["Trujillo", "Okafor", "Lindqvist", "Patel", "Moreau", "Novak", "Schmidt", "Tanaka", "Costa", "Murphy",
        "Berg", "Kowalski", "Haddad", "Rossi", "Nguyen", "Jensen"]
COMPANY = ["Fabrikam", "Contoso", "Adventure Works", "Northwind", "Litware", "Tailspin", "Wingtip", "Alpine",
           "Coho", "Proseware", "Trey", "Woodgrove", "Lucerne", "Margie's", "Blue Yonder", "Fourth Coffee"]
SUFFIX = ["Bikes", "Traders", "Outfitters", "Supplies", "Logistics", "Foods", "Systems", "Studios"]
CITIES = [("Bristol", "BS1 4QA", "GB"), ("Lyon", "69002", "FR"), ("Aarhus", "8000", "DK"), ("Graz", "8010", "AT"),
          ("Seattle", "98101", "US"), ("Porto", "4050-001", "PT")]
CURRENCIES = [("EUR", "Euro", "€", 0.92), ("GBP", "Pound Sterling", "£", 0.79), ("DKK", "Danish Krone", "kr.", 6.87),
              ("CAD", "Canadian Dollar", "CA$", 1.37), ("SEK", "Swedish Krona", "kr", 10.4),
              ("JPY", "Yen", "¥", 151.0), ("CHF", "Swiss Franc", "CHF", 0.88)]
UNITS = ["PCS", "BOX", "HOUR", "KG", "PACK", "SET", "DAY", "L"]
PRODUCTS = ["Touring Bike", "Helmet", "Bike Lock", "Water Bottle", "Tyre", "Chain", "Saddle", "Pump", "Light Set",
            "Gloves", "Service Hour", "Cleaning Kit"]


def seed(org: Organization, spec: dict[str, Any]) -> dict[str, list[str]]:
    rnd = random.Random(spec.get("seed", 42))  # noqa: S311 - reproducible demo data, not secrets
    system = identity.Caller(identity.SYSTEM_USER_ID, identity.SYSTEM_USER_ID)
    made: dict[str, list[str]] = {"systemusers": [], "transactioncurrencies": [], "uomschedules": [],
                                  "accounts": [], "contacts": [], "products": []}
    existing_users = len(org.store.rows["systemuser"])
    for i in range(int(spec.get("users", 0)) + int(spec.get("disabled_users", 0))):
        first, last = rnd.choice(FIRST), rnd.choice(LAST)
        n = existing_users + i
        email = f"{first}.{last}{n}@contoso.example".lower()
        disabled = i >= int(spec.get("users", 0))
        row = org.create("systemuser", {
            "firstname": first, "lastname": last, "internalemailaddress": email, "domainname": email,
            "mobilephone": f"+1 555 {1000 + n:04d}", "title": "Sales Representative", "isdisabled": disabled,
            # every fifth enabled user has no Sales licence (e.g. a back-office user)
            "islicensed": not disabled and i % 5 != 4}, system, notify=False)
        made["systemusers"].append(row["systemuserid"])
    for code, name, symbol, rate in CURRENCIES[: int(spec.get("currencies", 0))]:
        if any(c.get("isocurrencycode") == code for c in org.store.all("transactioncurrency")):
            continue
        row = org.create("transactioncurrency", {"isocurrencycode": code, "currencyname": name,
                                                 "currencysymbol": symbol, "exchangerate": rate,
                                                 "currencyprecision": 0 if code == "JPY" else 2}, system, notify=False)
        made["transactioncurrencies"].append(row["transactioncurrencyid"])
    for code in UNITS[: int(spec.get("unit_groups", 0))]:
        if any(g.get("name") == code for g in org.store.all("uomschedule")):
            continue
        row = org.create("uomschedule", {"name": code, "baseuomname": code}, system, notify=False)
        made["uomschedules"].append(row["uomscheduleid"])
    owners = [u["systemuserid"] for u in org.store.all("systemuser")
              if u.get("islicensed") and not u.get("isdisabled")] or [identity.SALESPERSON_ID]
    for i in range(int(spec.get("accounts", 0))):
        city, postcode, country = rnd.choice(CITIES)
        name = f"{rnd.choice(COMPANY)} {rnd.choice(SUFFIX)} {len(org.store.rows['account']) + 1}"
        slug = name.lower().replace(" ", "-").replace("'", "")
        account = org.create("account", {
            "name": name, "telephone1": f"+44 20 7946 {i % 10000:04d}", "emailaddress1": f"orders@{slug}.example",
            "websiteurl": f"https://{slug}.example", "address1_line1": f"{rnd.randint(1, 200)} Harbour Street",
            "address1_city": city, "address1_postalcode": postcode, "address1_country": country,
            "customertypecode": 3, "creditlimit": float(rnd.choice([5000, 10000, 25000, 50000])),
            "ownerid": EntityRef("systemuser", rnd.choice(owners))}, system, notify=False)
        made["accounts"].append(account["accountid"])
        for _ in range(int(spec.get("contacts_per_account", 0))):
            first, last = rnd.choice(FIRST), rnd.choice(LAST)
            contact = org.create("contact", {
                "firstname": first, "lastname": last, "emailaddress1": f"{first}.{last}@{slug}.example".lower(),
                "telephone1": account["telephone1"], "jobtitle": rnd.choice(["Buyer", "Owner", "Accountant"]),
                "parentcustomerid": EntityRef("account", account["accountid"]),
                "ownerid": account["ownerid"]}, system, notify=False)
            made["contacts"].append(contact["contactid"])
    schedule = identity.DEFAULT_UNIT_GROUP_ID
    for i in range(int(spec.get("products", 0))):
        number = f"P{len(org.store.rows['product']) + 1:05d}"
        price = float(rnd.choice([9.5, 24.0, 49.9, 120.0, 899.0]))
        product = org.create("product", {
            "name": f"{rnd.choice(PRODUCTS)} {i + 1}", "productnumber": number, "price": price,
            "standardcost": round(price * 0.6, 2), "currentcost": round(price * 0.6, 2),
            "quantityonhand": float(rnd.randint(0, 500)), "producttypecode": 1,
            "defaultuomscheduleid": EntityRef("uomschedule", schedule),
            "defaultuomid": EntityRef("uom", identity.DEFAULT_UNIT_ID)}, system, notify=False)
        product.update({"statecode": 0, "statuscode": 1})  # published, as products in a live org are
        made["products"].append(product["productid"])
    return made
