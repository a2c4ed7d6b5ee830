"""eventpipe.schema_registry"""
