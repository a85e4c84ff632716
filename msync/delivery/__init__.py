"""
Delivery: which device gets which op, when, and what is recorded of it.

  - L{msync.delivery.engine}: the engine, pushing, acks and reads; its
    parts: L{msync.delivery.admission} (hellos, binds, leaving),
    L{msync.delivery.planning} (the scopes a device reads),
    L{msync.delivery.progress} (positions written back) and
    L{msync.delivery.tick} (the shared timer pass);
  - L{msync.delivery.session}: what the engine keeps per connection;
  - L{msync.delivery.single}, L{msync.delivery.volatile},
    L{msync.delivery.tail}: single-device configs, non-persistent ops,
    and a busy scope's newest ops in memory;
  - L{msync.delivery.frames}: merged sync frames;
  - L{msync.delivery.ops}: the filters kept with each op;
  - L{msync.delivery.sender}: server-side sending, which the gateway and
    the console wrap;
  - L{msync.delivery.lookup}: what became of a user's or device's data.
"""
