"""The push layer: desired member state → plan → batched Mailchimp calls → acknowledgement."""
