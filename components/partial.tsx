import type { PropsWithChildren } from '@kitajs/html'

declare global {
  namespace JSX {
    interface IntrinsicElements {
      /**
       * htmx 2.0.11+ and htmx 4: the content goes into `hx-target` (with `hx-swap`),
       * wherever the message itself lands, so one stream can update many places.
       */
      'hx-partial': HtmlTag
    }
  }
}

/** Props of `<Partial>`. Other attributes pass through to `<hx-partial>`. */
export type PartialProps = PropsWithChildren<
  {
    /** A CSS selector: the element the content goes into (`hx-target`). */
    target: string
    /** How it goes in (`hx-swap`): `afterbegin`, `beforeend`, `outerHTML`… @default 'innerHTML' */
    swap?: string | undefined
  } & JSX.HtmlTag
>

/**
 * A typed `<hx-partial>`: its content replaces (or joins, with `swap`) the
 * element `target` selects, wherever the message carrying it is swapped. Both
 * htmx 2 (2.0.11+) and htmx 4 understand it, so the same frame serves both, and
 * one event stream per tab can update every part of the page.
 *
 * @example
 * ```tsx
 * await app.sse.publish('notes', (
 *   <Partial target="#notes" swap="afterbegin">
 *     <li safe>{note.text}</li>
 *   </Partial>
 * ))
 * ```
 */
export function Partial({ target, swap, children, ...rest }: PartialProps): JSX.Element {
  return (
    <hx-partial {...rest} hx-target={target} hx-swap={swap}>
      {children}
    </hx-partial>
  )
}
