"""Responsible by default: prompt moderation (`moderation`), output checks (`checkers`), provenance
metadata and watermarks (`provenance`, `watermark`), Content Credentials (`c2pa`) and `verify`."""
