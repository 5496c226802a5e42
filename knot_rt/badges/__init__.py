"""Badges: RFID cards a rider links to the account and shows at a station to unlock (issue 9)."""
