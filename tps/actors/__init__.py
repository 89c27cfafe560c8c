"""The pykka actors of TPS: supervisor, stream readers, batching writer, query pool."""
