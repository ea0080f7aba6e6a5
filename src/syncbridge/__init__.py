"""syncbridge: sync CRM and commerce data into Mailchimp."""
