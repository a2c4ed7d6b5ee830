"""eventpipe.backfill"""
