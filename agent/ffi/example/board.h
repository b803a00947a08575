/* The board under agent-net-c: QEMU mps2-an386 (Cortex-M4, CPU clock 25 MHz). */
#ifndef BOARD_H
#define BOARD_H

#include <stddef.h>
#include <stdint.h>

/* Starts SysTick at 1 kHz. */
void board_start_clock(void);
/* Milliseconds since boot (SysTick; wraps after 49 days, which the agent tolerates). */
uint32_t board_millis(void);
/* Waits for the next interrupt (a received byte, the millisecond tick) unless a byte is
   already waiting: the idle of the main loop, so an idle QEMU device costs the host next
   to nothing. */
void board_sleep(void);
/* Resets the system (SCB AIRCR SYSRESETREQ), as a watchdog would. */
void board_reset(void) __attribute__((noreturn));

/* Enables UART0 (CMSDK APB UART at 0x40004000) for transmit and receive, and its receive
   interrupt (which only wakes the core from board_sleep). */
void uart_init(void);
/* Reads up to len bytes without blocking: 0 when none waits; once one has arrived, waits
   briefly for the rest of a burst (QEMU hands the UART one byte at a time). */
size_t uart_read(uint8_t *buf, size_t len);
/* Writes all len bytes (waits while the transmitter is full). */
void uart_write(const uint8_t *data, size_t len);

#endif
