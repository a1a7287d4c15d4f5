"""The coordinator daemon (`renderd daemon`): job store, scheduler, host transport, control socket."""
