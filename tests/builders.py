"""Writers of test inputs shaped like real exports, and a small config around them."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from syncbridge.config.loader import Settings, parse_config
from syncbridge.settings import check_settings

SALESFORCE_HEADER = [
    "Contact ID",
    "First Name",
    "Last Name",
    "Title",
    "Account Name",
    "Email",
    "Phone",
    "Mailing City",
    "Mailing State/Province",
    "Mailing Country",
    "Email Opt Out",
    "Lead Source",
    "Created Date",
    "Last Modified Date",
]
SALESFORCE_FOOTER = (
    '\r\n"Contacts & Accounts"\r\n'
    '"Copyright (c) 2000-2026 salesforce.com, inc. All rights reserved."\r\n'
    '"Confidential Information - Do Not Distribute"\r\n'
)
SHOPIFY_CUSTOMER_HEADER = [
    "Customer ID",
    "First Name",
    "Last Name",
    "Email",
    "Accepts Email Marketing",
    "Default Address Company",
    "Default Address Address1",
    "Default Address Address2",
    "Default Address City",
    "Default Address Province Code",
    "Default Address Country Code",
    "Default Address Zip",
    "Default Address Phone",
    "Phone",
    "Accepts SMS Marketing",
    "Total Spent",
    "Total Orders",
    "Note",
    "Tax Exempt",
    "Tags",
]

CRM_MAPPING = """
[record.timestamp]
field = "Last Modified Date"
type = "datetime"
format = "%m/%d/%Y %I:%M %p"
timezone = "America/Los_Angeles"
[identifiers]
email = "Email"
phone = "Phone"
external = { "salesforce:contact" = "Contact ID" }
[attributes]
first_name = "First Name"
last_name = "Last Name"
city = "Mailing City"
country = { field = "Mailing Country", type = "country" }
email_opt_out = { field = "Email Opt Out", type = "boolean" }
crm_created_on = { field = "Created Date", type = "date", format = "%m/%d/%Y" }
"""

SHOP_MAPPING = """
[identifiers]
email = "Email"
phone = { field = ["Phone", "Default Address Phone"] }
external = { "shopify:customer" = { field = "Customer ID", strip_chars = "'" } }
[attributes]
first_name = "First Name"
last_name = "Last Name"
city = "Default Address City"
country = { field = "Default Address Country Code", type = "country" }
accepts_email_marketing = { field = "Accepts Email Marketing", type = "boolean" }
shop_total_spent = { field = "Total Spent", type = "number" }
"""


def salesforce_row(
    contact_id: str, email: str, first: str = "", last: str = "", **extra: str
) -> dict[str, str]:
    row = {h: "" for h in SALESFORCE_HEADER}
    row.update(
        {
            "Contact ID": contact_id,
            "Email": email,
            "First Name": first,
            "Last Name": last,
            "Email Opt Out": "0",
            "Created Date": "3/11/2025",
            "Last Modified Date": "10/2/2026 4:05 PM",
        }
    )
    row.update(extra)
    return row


def shopify_row(
    customer_id: str, email: str, first: str = "", last: str = "", **extra: str
) -> dict[str, str]:
    row = {h: "" for h in SHOPIFY_CUSTOMER_HEADER}
    row.update(
        {
            "Customer ID": f"'{customer_id}",
            "Email": email,
            "First Name": first,
            "Last Name": last,
            "Accepts Email Marketing": "yes",
            "Total Spent": "0.00",
            "Total Orders": "0",
            "Tax Exempt": "no",
            "Accepts SMS Marketing": "no",
        }
    )
    row.update(extra)
    return row


def write_salesforce_report(path: Path, rows: list[dict[str, str]]) -> Path:
    """Like Salesforce's report export: all quoted, CRLF, report details after a blank line."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8", newline="") as fh:
        writer = csv.DictWriter(fh, SALESFORCE_HEADER, quoting=csv.QUOTE_ALL, lineterminator="\r\n")
        writer.writeheader()
        writer.writerows(rows)
        fh.write(SALESFORCE_FOOTER)
    return path


def write_shopify_customers(path: Path, rows: list[dict[str, str]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8", newline="") as fh:
        writer = csv.DictWriter(fh, SHOPIFY_CUSTOMER_HEADER, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    return path


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    return path


def two_source_config(tmp_path: Path, store_url: str) -> dict[str, Any]:
    """A config tree with a Salesforce report stream and a Shopify customers snapshot."""
    (tmp_path / "crm.toml").write_text(CRM_MAPPING, encoding="utf-8")
    (tmp_path / "shop.toml").write_text(SHOP_MAPPING, encoding="utf-8")
    return {
        "store": {"url": store_url},
        "identity": {"source_priority": ["crm", "shop"]},
        "sources": [
            {
                "name": "crm",
                "connector": "files",
                "streams": [
                    {
                        "name": "contacts",
                        "path": "crm/contacts.csv",
                        "primary_key": "Contact ID",
                        "cursor_field": "Last Modified Date",
                        "cursor_format": "%m/%d/%Y %I:%M %p",
                        "cursor_timezone": "America/Los_Angeles",
                        "stop_at_blank_row": True,
                        "mapping": "crm.toml",
                    }
                ],
            },
            {
                "name": "shop",
                "connector": "files",
                "streams": [
                    {
                        "name": "customers",
                        "path": "shop/customers.csv",
                        "primary_key": "Customer ID",
                        "snapshot": True,
                        "mapping": "shop.toml",
                    }
                ],
            },
        ],
    }


def settings_from(
    data: dict[str, Any], base_dir: Path, env: dict[str, str] | None = None
) -> Settings:
    config = parse_config(data, str(base_dir / "config.toml"), base_dir, env or {})
    return check_settings(config, base_dir / "config.toml")
