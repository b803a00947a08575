//! The host device: the real agent, on file-backed simulated flash, speaking real MQTT.
//!
//! Not built yet (issues 5 and 7): one simulated device or a fleet of them, reaching the
//! backend only over the network, exactly as a real device does.
