"""Mailing lists and their subscribers: browsing and changing them by hand, and importing CSV
files (`importing`). The models live in `campaigns.models`, with the app's migrations."""
