"""
The device protocol's codec, shared by the server and the device SDK:
frames (L{msync.wire.frames}) and messages (L{msync.wire.messages}).
Sans-IO: nothing here reads a clock or touches a socket.
"""
