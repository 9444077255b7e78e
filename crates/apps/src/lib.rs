//! Apps: app identities, their installations in organizations and the app proxy.
