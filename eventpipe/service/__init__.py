"""eventpipe.service"""
