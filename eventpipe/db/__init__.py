"""eventpipe.db"""
