//! Health checks: checkers, tracker, manager.
