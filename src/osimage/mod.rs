//! OS images in the filesystem (reference 11.3): `lib/public/os/<profile>/` profiles and, as
//! the OS image issue lands, `lib/distributions/<name>/` media, import, fingerprinting and
//! stock profiles from `osimages/` templates.
//!
//! **API boundary:** knows files and the configuration, never sockets or nodes' boot state;
//! DHCP, boot rendering and the API read profiles through here.

pub mod profile;
